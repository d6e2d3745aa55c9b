// GPU machine diagnostics: prints a native backtrace on SIGSEGV for a process that has no gdb
// (the H200 machine has none). Build and preload it, then map the _core offsets to functions:
//   gcc -shared -fPIC -o /tmp/segv.so scripts/segv_backtrace.c
//   LD_PRELOAD=/tmp/segv.so python3 script.py 2>bt.txt
//   grep _core bt.txt | sed -n 's/.*(+\(0x[0-9a-f]*\)).*/\1/p' | xargs addr2line -C -f -e _core*.so
// Written for the Python module's segmentation fault on the H200 (docs/PERF.md, issue 15), not
// yet run there.
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
static void on_segv(int sig) {
  void* frames[64];
  int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, 2);
  _exit(128 + sig);
}
__attribute__((constructor)) static void install(void) { signal(SIGSEGV, on_segv); }
