// LD_PRELOAD shim for the I/O fault tests (tests/io_fault_test.sh): makes one
// kind of call fail, on paths containing a given text, as a failing disk
// would. VLM_FAIL_IO="<call>:<path text>[:<errno>[:<n>]]", where <call> is
// write, fsync, close, rename or remove (remove, unlink, unlinkat, rmdir),
// <path text> is found anywhere in the path (or at its end, written with a
// trailing '$'), <errno> is EIO (the default) or ENOSPC, and the calls fail
// from the n-th matching one on (default 1). A failing close still closes.
// VLM_SLOW_FSYNC="<path text>:<seconds>" makes every fsync of a matching path
// take that much longer, as a slow network file system would (the launcher
// test's save that outlasts mpirun's 2 s between SIGTERM and SIGKILL).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int matches(const char* call, const char* path) {
  static int seen = 0;  // matching calls so far
  const char* spec = getenv("VLM_FAIL_IO");
  if (spec == NULL || path == NULL) return 0;
  char copy[512];
  snprintf(copy, sizeof copy, "%s", spec);
  char* wanted_call = strtok(copy, ":");
  char* text = strtok(NULL, ":");
  if (wanted_call == NULL || text == NULL || strcmp(wanted_call, call) != 0) return 0;
  const size_t length = strlen(text), path_length = strlen(path);
  if (length > 0 && text[length - 1] == '$') {
    text[length - 1] = '\0';
    if (path_length < length - 1 || strcmp(path + path_length - (length - 1), text) != 0) return 0;
  } else if (strstr(path, text) == NULL) {
    return 0;
  }
  const char* code = strtok(NULL, ":");
  const char* from = strtok(NULL, ":");
  if (++seen < (from != NULL ? atoi(from) : 1)) return 0;
  errno = code != NULL && strcmp(code, "ENOSPC") == 0 ? ENOSPC : EIO;
  return 1;
}

static int fd_matches(const char* call, int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = '\0';
  return matches(call, path);
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

ssize_t write(int fd, const void* data, size_t bytes) {
  if (fd_matches("write", fd)) return -1;
  return REAL("write", ssize_t (*)(int, const void*, size_t))(fd, data, bytes);
}

static void slow_down(int fd) {
  const char* spec = getenv("VLM_SLOW_FSYNC");
  if (spec == NULL) return;
  char text[256], link[64], path[4096];
  snprintf(text, sizeof text, "%s", spec);
  char* colon = strrchr(text, ':');
  if (colon == NULL) return;
  *colon = '\0';
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return;
  path[n] = '\0';
  if (strstr(path, text) != NULL) usleep((useconds_t)(atof(colon + 1) * 1e6));
}

int fsync(int fd) {
  slow_down(fd);
  if (fd_matches("fsync", fd)) return -1;
  return REAL("fsync", int (*)(int))(fd);
}

int close(int fd) {
  const int fail = fd_matches("close", fd);
  const int saved = errno;
  const int result = REAL("close", int (*)(int))(fd);
  if (fail) {
    errno = saved;
    return -1;
  }
  return result;
}

int rename(const char* from, const char* to) {
  if (matches("rename", to)) return -1;
  return REAL("rename", int (*)(const char*, const char*))(from, to);
}

int remove(const char* path) {
  if (matches("remove", path)) return -1;
  return REAL("remove", int (*)(const char*))(path);
}

int unlink(const char* path) {
  if (matches("remove", path)) return -1;
  return REAL("unlink", int (*)(const char*))(path);
}

int unlinkat(int dirfd, const char* path, int flags) {
  if (matches("remove", path)) return -1;
  return REAL("unlinkat", int (*)(int, const char*, int))(dirfd, path, flags);
}

int rmdir(const char* path) {
  if (matches("remove", path)) return -1;
  return REAL("rmdir", int (*)(const char*))(path);
}
