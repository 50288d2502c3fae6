// The only C in Baton. Glibc as imported by Swift on this toolchain does not export
// epoll, eventfd or timerfd, and `struct epoll_event` is packed on x86_64, which Swift
// cannot lay out reliably. This header exposes what BatonPosix needs as plain functions
// and constants; every call here is a thin pass-through, errno is left for Swift to read.
#pragma once

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>

// MARK: - Constants

static const uint32_t BATON_EPOLLIN = EPOLLIN;
static const uint32_t BATON_EPOLLOUT = EPOLLOUT;
static const uint32_t BATON_EPOLLERR = EPOLLERR;
static const uint32_t BATON_EPOLLHUP = EPOLLHUP;
static const int BATON_EPOLL_CTL_ADD = EPOLL_CTL_ADD;
static const int BATON_EPOLL_CTL_MOD = EPOLL_CTL_MOD;
static const int BATON_EPOLL_CTL_DEL = EPOLL_CTL_DEL;

/// Most buffers one `sendmsg` accepts (`IOV_MAX`, 1024 on Linux).
#if defined(IOV_MAX)
static const int BATON_IOV_MAX = IOV_MAX;
#elif defined(__IOV_MAX)
static const int BATON_IOV_MAX = __IOV_MAX;
#else
static const int BATON_IOV_MAX = 1024;
#endif

// MARK: - epoll

/// `epoll_create1(EPOLL_CLOEXEC)`.
int baton_epoll_create(void);

/// `epoll_ctl` with the event mask and the 64-bit user data spelled out, so that Swift
/// never touches the packed `struct epoll_event`.
int baton_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);

/// Bytes one event occupies in the buffer passed to `baton_epoll_wait`.
static inline size_t baton_epoll_event_size(void) { return sizeof(struct epoll_event); }

/// `epoll_wait` into `events`, a buffer of `maxevents * baton_epoll_event_size()` bytes.
int baton_epoll_wait(int epfd, void *events, int maxevents, int timeout_ms);

/// The event mask of the `index`th event in a buffer filled by `baton_epoll_wait`.
static inline uint32_t baton_epoll_event_events(const void *events, int index) {
  return ((const struct epoll_event *)events)[index].events;
}

/// The user data of the `index`th event in a buffer filled by `baton_epoll_wait`.
static inline uint64_t baton_epoll_event_data(const void *events, int index) {
  return ((const struct epoll_event *)events)[index].data.u64;
}

// MARK: - eventfd and timerfd

/// `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`.
int baton_eventfd_create(void);

/// `timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)`.
int baton_timerfd_create(void);

/// Arms a timerfd to expire once at `deadline_ns` on CLOCK_MONOTONIC (absolute time).
/// A deadline of 0 would disarm the timer, so 0 is sent as 1 ns.
int baton_timerfd_arm(int fd, uint64_t deadline_ns);

// MARK: - Sockets and threads

/// `accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)`.
int baton_accept(int fd);

/// Flags for `socket(2)`: `SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC`.
static const int BATON_SOCK_STREAM_NONBLOCK_CLOEXEC = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;

/// `MSG_NOSIGNAL`: a write to a closed peer fails with EPIPE instead of raising SIGPIPE.
static const int BATON_MSG_NOSIGNAL = MSG_NOSIGNAL;

/// CPUs this process may run on (`sched_getaffinity`), falling back to the online count.
int baton_available_cpus(void);

/// Names the calling thread (at most 15 bytes are kept, as the kernel allows).
int baton_set_thread_name(const char *name);

/// Copies the calling thread's name into `buffer` (at least 16 bytes).
int baton_get_thread_name(char *buffer, size_t size);

/// Bytes received on a socket and not yet read (`ioctl(FIONREAD)`, which Swift cannot call:
/// `ioctl` is variadic); -1 with errno on failure.
int baton_readable_bytes(int fd);
