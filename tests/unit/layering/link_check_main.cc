// See CMakeLists.txt: the link of this program is the check; it does nothing when run.
int main() { return 0; }
