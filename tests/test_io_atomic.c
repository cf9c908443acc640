/* Atomic saves (temporary file, fsync, rename): failures at every step
 * leave an existing file as it was and no temporary behind; a save killed at
 * an arbitrary moment leaves the old file or the new one, whole. No device
 * needed. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "io_testutil.h"

static void write_one(const char *path, const float *v, int64_t n, dynb_status want) {
  dynb__st_entry e = {"x", DYNB_ST_F32, 1, &n, v};
  char err[512];
  dynb_status st = dynb__st_write(path, &e, 1, NULL, NULL, 0, err, sizeof err);
  if (st != want) fail_msg("%s: %s, expected %s", err, dynb_status_name(st), dynb_status_name(want));
  if (want != DYNB_OK) iot_expect_msg(err, path, "");
}

static void atomic_failures_keep_the_old_file(void **state) {
  (void)state;
  char path[300], missing[400];
  iot_path(path, sizeof path, "keep.safetensors");
  static float big[1 << 16];
  big[0] = 1, big[3] = -2;
  write_one(path, big, 4, DYNB_OK);
  size_t n0, n1;
  unsigned char *before = iot_slurp(path, &n0);

  /* A write that fails midway (file size limit: EFBIG, even for root). */
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 4096;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  write_one(path, big, 1 << 16, DYNB_STATUS_IO_ERROR);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  unsigned char *after = iot_slurp(path, &n1);
  assert_int_equal(n0, n1);
  assert_memory_equal(before, after, n0);
  free(after);
  assert_int_equal(iot_count(".tmp."), 0);

  /* A target in a missing folder, or where nothing can be created. */
  snprintf(missing, sizeof missing, "%s/no/such/dir/x.safetensors", iot_dir);
  write_one(missing, big, 4, DYNB_STATUS_IO_ERROR);
  if (access("/proc/self", F_OK) == 0) write_one("/proc/dynb-test.safetensors", big, 4, DYNB_STATUS_IO_ERROR);

  /* A target that is a folder: the rename fails, the temporary goes. */
  char folder[300];
  iot_path(folder, sizeof folder, "folder.safetensors");
  assert_int_equal(mkdir(folder, 0755), 0);
  write_one(folder, big, 4, DYNB_STATUS_IO_ERROR);
  struct stat sb;
  assert_int_equal(stat(folder, &sb), 0);
  assert_true(S_ISDIR(sb.st_mode));
  assert_int_equal(iot_count(".tmp."), 0);
  rmdir(folder);

  /* A stale temporary of an earlier crash with our pid is left alone. */
  char stale[400];
  snprintf(stale, sizeof stale, "%s.tmp.%ld", path, (long)getpid());
  iot_write(stale, "stale", 5);
  chmod(path, 0640);
  write_one(path, big, 4, DYNB_OK);
  unsigned char *s = iot_slurp(stale, &n1);
  assert_int_equal(n1, 5);
  assert_memory_equal(s, "stale", 5);
  free(s);
  remove(stale);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0640); /* permissions survive the replacement */
  assert_int_equal(iot_count(".tmp."), 0);
  free(before);
}

/* A save killed at an arbitrary moment leaves the old file or the new one,
 * whole. The moment varies with scheduling; the check holds for any. */
static void atomic_kill_mid_save(void **state) {
  (void)state;
  char path[300], err[512];
  iot_path(path, sizeof path, "killed.safetensors");
  enum { N = 1 << 20 };
  float *v = calloc(N, sizeof *v);
  for (int i = 0; i < N; i++) v[i] = (float)i;
  write_one(path, v, 16, DYNB_OK);
  size_t n_old, n_new;
  unsigned char *old = iot_slurp(path, &n_old);
  char newp[300];
  iot_path(newp, sizeof newp, "new.safetensors");
  write_one(newp, v, N, DYNB_OK);
  unsigned char *fresh = iot_slurp(newp, &n_new);
  for (int round = 0; round < 4; round++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      int64_t n = N;
      dynb__st_entry e = {"x", DYNB_ST_F32, 1, &n, v};
      (void)!write(fds[1], "go", 2);
      for (;;) dynb__st_write(path, &e, 1, NULL, NULL, 0, err, sizeof err);
    }
    close(fds[1]);
    char go[2];
    (void)!read(fds[0], go, 2);
    close(fds[0]);
    struct timespec pause = {0, round * 3000000L};
    nanosleep(&pause, NULL);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    size_t n;
    unsigned char *now = iot_slurp(path, &n);
    bool is_old = n == n_old && memcmp(now, old, n) == 0;
    bool is_new = n == n_new && memcmp(now, fresh, n) == 0;
    if (!is_old && !is_new) fail_msg("round %d: target is neither the old nor the new file (%zu bytes)", round, n);
    free(now);
    /* What a crash may leave: its temporary, never a partial target. */
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)pid);
    remove(tmp);
  }
  remove(newp);
  free(old), free(fresh), free(v);
}

/* Temporaries of killed saves ("<name>.tmp.<pid>") go at the next save of
 * the same file once their process is gone and they are an hour old; a
 * recent one, one of a live process, and other files stay. */
static void stale_temporaries_are_removed(void **state) {
  (void)state;
  char path[300], stale[400], stale_k[400], recent[400], live[400], other[400];
  iot_path(path, sizeof path, "stale.safetensors");
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) _exit(0);
  assert_int_equal(waitpid(child, NULL, 0), child); /* a pid with no process */
  snprintf(stale, sizeof stale, "%s.tmp.%ld", path, (long)child);
  snprintf(stale_k, sizeof stale_k, "%s.tmp.%ld.3", path, (long)child);
  snprintf(recent, sizeof recent, "%s.tmp.%ld.4", path, (long)child);
  snprintf(live, sizeof live, "%s.tmp.%ld", path, (long)getppid());
  snprintf(other, sizeof other, "%s.tmp.%ldx", path, (long)child);
  const char *all[] = {stale, stale_k, recent, live, other};
  for (int i = 0; i < 5; i++) {
    FILE *f = fopen(all[i], "w");
    assert_non_null(f);
    fputs("partial", f);
    fclose(f);
  }
  struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
  for (int i = 0; i < 5; i++)
    if (all[i] != recent) assert_int_equal(utimensat(AT_FDCWD, all[i], old, 0), 0);
  float v[2] = {1, 2};
  write_one(path, v, 2, DYNB_OK);
  struct stat st;
  assert_int_not_equal(stat(stale, &st), 0);
  assert_int_not_equal(stat(stale_k, &st), 0);
  for (int i = 2; i < 5; i++) {
    if (stat(all[i], &st) != 0) fail_msg("%s was removed", all[i]);
    remove(all[i]);
  }
  remove(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(atomic_failures_keep_the_old_file),
      cmocka_unit_test(atomic_kill_mid_save),
      cmocka_unit_test(stale_temporaries_are_removed),
  };
  return cmocka_run_group_tests(tests, iot_setup, iot_teardown);
}
