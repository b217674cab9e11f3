/*
 * fault_pkcs11: a PKCS#11 module for tests that forwards every call to a real module
 * (SoftHSM2) and injects faults on command. kmsd loads it like any module
 * (hsm.module_path = .../libkms_fault_pkcs11.so).
 *
 * Environment (read at C_GetFunctionList):
 *   KMS_FAULT_PKCS11_TARGET   the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   KMS_FAULT_PKCS11_CONTROL  the control file; absent or missing file: pure pass-through
 *
 * Control file: one command per line, '#' starts a comment; re-read whenever its
 * modification time or size changes (checked on every call), so a test rewrites it
 * (write a temporary file, rename it over) to change the faults of a running process.
 *   fail <fn|*> <rv> [times]  calls of <fn> (e.g. C_Encrypt; * = every function) return
 *                             <rv> without reaching the real module; <rv> is a CKR_ name
 *                             (CKR_DEVICE_ERROR, ...), or a number (0x30, 48). With
 *                             [times], only the next <times> matching calls fail (the
 *                             count restarts when the file is re-read). "*" never
 *                             fails C_Finalize (name it to fail it): a library's own
 *                             clean-up does not need the device.
 *   delay <fn|*> <ms>         matching calls sleep <ms> milliseconds, then go through.
 *   hang <fn|*>               matching calls block until the line is removed from the
 *                             file (a stuck HSM), then go through.
 *   restart <generation>      the first call that sees a new <generation> closes every
 *                             real session on every slot (C_CloseAllSessions): what an HSM
 *                             restart or fail-over does to its clients. Session objects
 *                             (kmsd's KEKs) and the login go with them.
 * The first matching rule of each kind applies; "fail" is checked after delay and hang.
 *
 * Counts: <control>.counts is rewritten after every C_Initialize, C_Finalize and C_Login
 * with "<fn> <calls>" lines for every function called so far (e.g. to assert that a wrong
 * PIN does not cause a login storm). The counts survive the module being unloaded and
 * loaded again (a C_Finalize/C_Initialize cycle): they are read back at load.
 *
 * Thread-safe: the rule table is swapped under a mutex; forwarded calls hold a read lock
 * that a restart takes for writing, so sessions are never closed under a call in flight.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST* g_real = NULL;
static CK_FUNCTION_LIST g_list;
static void* g_handle = NULL;
static char g_control[4096];
static int g_have_control = 0;

enum rule_kind { RULE_FAIL, RULE_DELAY, RULE_HANG };
struct rule {
  int kind;
  int fn; /* -1: every function */
  CK_RV rv;
  long arg;      /* delay ms; fail: remaining times (-1: forever) */
};
#define MAX_RULES 64
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rule g_rules[MAX_RULES];
static int g_nrules = 0;
static struct timespec g_mtime;
static off_t g_size = -1;
static long g_restart_seen = 0;
static long g_restart_wanted = 0;
static int g_read_once = 0; /* a generation present at the first read counts as applied */
static pthread_rwlock_t g_calls = PTHREAD_RWLOCK_INITIALIZER;

static int fault_before(int fn, CK_RV* rv);
static void fault_after(int fn, CK_RV rv);

#include "fault_pkcs11_wrappers.inc"

static unsigned long g_counts[FN_COUNT];

struct rv_name {
  const char* name;
  CK_RV rv;
};
static const struct rv_name kRvNames[] = {
    {"CKR_OK", CKR_OK},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_SESSION_COUNT", CKR_SESSION_COUNT},
    {"CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
    {"CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED},
    {"CKR_PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"CKR_PIN_LOCKED", CKR_PIN_LOCKED},
    {"CKR_HOST_MEMORY", CKR_HOST_MEMORY},
    {"CKR_ENCRYPTED_DATA_INVALID", CKR_ENCRYPTED_DATA_INVALID},
};

static int parse_rv(const char* s, CK_RV* out) {
  for (size_t i = 0; i < sizeof(kRvNames) / sizeof(kRvNames[0]); ++i) {
    if (strcmp(s, kRvNames[i].name) == 0) {
      *out = kRvNames[i].rv;
      return 1;
    }
  }
  char* end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0') return 0;
  *out = (CK_RV)v;
  return 1;
}

static int parse_fn(const char* s) {
  if (strcmp(s, "*") == 0) return -1;
  for (int i = 0; i < FN_COUNT; ++i) {
    if (strcmp(s, kFnNames[i]) == 0) return i;
  }
  return -2;
}

/* Re-reads the control file when it changed. Caller holds g_mu. */
static void reload_locked(void) {
  if (!g_have_control) return;
  struct stat st;
  if (stat(g_control, &st) != 0) {
    if (g_size != -1) {
      g_nrules = 0;
      g_size = -1;
    }
    return;
  }
  if (st.st_size == g_size && st.st_mtim.tv_sec == g_mtime.tv_sec &&
      st.st_mtim.tv_nsec == g_mtime.tv_nsec) {
    return;
  }
  FILE* f = fopen(g_control, "r");
  if (f == NULL) return;
  g_size = st.st_size;
  g_mtime = st.st_mtim;
  g_nrules = 0;
  char line[512];
  while (fgets(line, sizeof(line), f) != NULL) {
    char* hash = strchr(line, '#');
    if (hash != NULL) *hash = '\0';
    char cmd[32] = {0}, a[128] = {0}, b[128] = {0}, c[64] = {0};
    int n = sscanf(line, "%31s %127s %127s %63s", cmd, a, b, c);
    if (n < 1) continue;
    if (strcmp(cmd, "restart") == 0 && n >= 2) {
      g_restart_wanted = strtol(a, NULL, 10);
      continue;
    }
    if (g_nrules >= MAX_RULES || n < 2) continue;
    struct rule r = {0, parse_fn(a), CKR_OK, -1};
    if (r.fn == -2) {
      fprintf(stderr, "fault_pkcs11: unknown function '%s'\n", a);
      continue;
    }
    if (strcmp(cmd, "fail") == 0 && n >= 3 && parse_rv(b, &r.rv)) {
      r.kind = RULE_FAIL;
      r.arg = n >= 4 ? strtol(c, NULL, 10) : -1;
    } else if (strcmp(cmd, "delay") == 0 && n >= 3) {
      r.kind = RULE_DELAY;
      r.arg = strtol(b, NULL, 10);
    } else if (strcmp(cmd, "hang") == 0) {
      r.kind = RULE_HANG;
    } else {
      fprintf(stderr, "fault_pkcs11: bad control line: %s\n", line);
      continue;
    }
    g_rules[g_nrules++] = r;
  }
  fclose(f);
  if (!g_read_once) {
    g_read_once = 1;
    g_restart_seen = g_restart_wanted;
  }
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int has_rule_locked(int kind, int fn, struct rule** found) {
  for (int i = 0; i < g_nrules; ++i) {
    struct rule* r = &g_rules[i];
    if (r->kind != kind || (r->fn != -1 && r->fn != fn)) continue;
    if (kind == RULE_FAIL && r->fn == -1 && fn == FN_C_Finalize) continue;
    if (kind == RULE_FAIL && r->arg == 0) continue;
    if (found != NULL) *found = r;
    return 1;
  }
  return 0;
}

/* Closes every real session on every slot (an HSM restart). */
static void restart_sessions(void) {
  pthread_rwlock_wrlock(&g_calls);
  CK_ULONG n = 0;
  if (g_real->C_GetSlotList(CK_FALSE, NULL, &n) == CKR_OK && n > 0) {
    CK_SLOT_ID* slots = calloc(n, sizeof(CK_SLOT_ID));
    if (slots != NULL && g_real->C_GetSlotList(CK_FALSE, slots, &n) == CKR_OK) {
      for (CK_ULONG i = 0; i < n; ++i) g_real->C_CloseAllSessions(slots[i]);
    }
    free(slots);
  }
  pthread_rwlock_unlock(&g_calls);
  fprintf(stderr, "fault_pkcs11: closed every session (HSM restart)\n");
}

static void write_counts_locked(void) {
  if (!g_have_control) return;
  char path[4200], tmp[4300];
  snprintf(path, sizeof(path), "%s.counts", g_control);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE* f = fopen(tmp, "w");
  if (f == NULL) return;
  for (int i = 0; i < FN_COUNT; ++i) {
    if (g_counts[i] != 0) fprintf(f, "%s %lu\n", kFnNames[i], g_counts[i]);
  }
  fclose(f);
  rename(tmp, path);
}

/* Returns 1 with *rv set when the call must fail without reaching the real module. */
static int fault_before(int fn, CK_RV* rv) {
  int do_restart = 0;
  long delay = 0;
  pthread_mutex_lock(&g_mu);
  ++g_counts[fn];
  reload_locked();
  if (g_restart_wanted != g_restart_seen && fn != FN_C_Initialize && fn != FN_C_Finalize) {
    g_restart_seen = g_restart_wanted;
    do_restart = 1;
  }
  struct rule* r = NULL;
  if (has_rule_locked(RULE_DELAY, fn, &r)) delay = r->arg;
  int hang = has_rule_locked(RULE_HANG, fn, NULL);
  pthread_mutex_unlock(&g_mu);

  if (do_restart) restart_sessions();
  if (delay > 0) sleep_ms(delay);
  while (hang) {
    sleep_ms(10);
    pthread_mutex_lock(&g_mu);
    reload_locked();
    hang = has_rule_locked(RULE_HANG, fn, NULL);
    pthread_mutex_unlock(&g_mu);
  }

  pthread_mutex_lock(&g_mu);
  int fail = has_rule_locked(RULE_FAIL, fn, &r);
  if (fail) {
    *rv = r->rv;
    if (r->arg > 0) --r->arg;
  }
  if (fail && (fn == FN_C_Initialize || fn == FN_C_Finalize || fn == FN_C_Login)) {
    write_counts_locked();
  }
  pthread_mutex_unlock(&g_mu);
  if (fail) return 1;
  pthread_rwlock_rdlock(&g_calls);
  return 0;
}

static void fault_after(int fn, CK_RV rv) {
  (void)rv;
  pthread_rwlock_unlock(&g_calls);
  if (fn == FN_C_Initialize || fn == FN_C_Finalize || fn == FN_C_Login) {
    pthread_mutex_lock(&g_mu);
    write_counts_locked();
    pthread_mutex_unlock(&g_mu);
  }
}

static void read_counts_locked(void) {
  char path[4200], name[128];
  unsigned long n = 0;
  snprintf(path, sizeof(path), "%s.counts", g_control);
  FILE* f = fopen(path, "r");
  if (f == NULL) return;
  while (fscanf(f, "%127s %lu", name, &n) == 2) {
    int fn = parse_fn(name);
    if (fn >= 0) g_counts[fn] = n;
  }
  fclose(f);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out) {
  if (out == NULL) return CKR_ARGUMENTS_BAD;
  pthread_mutex_lock(&g_mu);
  if (g_real == NULL) {
    const char* target = getenv("KMS_FAULT_PKCS11_TARGET");
    if (target == NULL || *target == '\0') target = "/usr/lib/softhsm/libsofthsm2.so";
    const char* control = getenv("KMS_FAULT_PKCS11_CONTROL");
    if (control != NULL && *control != '\0' && strlen(control) < sizeof(g_control)) {
      strcpy(g_control, control);
      g_have_control = 1;
      read_counts_locked();
    }
    g_handle = dlopen(target, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList get = NULL;
    if (g_handle != NULL) *(void**)(&get) = dlsym(g_handle, "C_GetFunctionList");
    CK_FUNCTION_LIST* real = NULL;
    if (get == NULL || get(&real) != CKR_OK || real == NULL) {
      fprintf(stderr, "fault_pkcs11: cannot load %s\n", target);
      pthread_mutex_unlock(&g_mu);
      return CKR_GENERAL_ERROR;
    }
    g_real = real;
    g_list.version = real->version;
    g_list.C_GetFunctionList = C_GetFunctionList;
    FAULT_FILL_LIST(&g_list);
  }
  pthread_mutex_unlock(&g_mu);
  *out = &g_list;
  return CKR_OK;
}
