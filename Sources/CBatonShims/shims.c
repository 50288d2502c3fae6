#define _GNU_SOURCE
#include "CBatonShims.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int baton_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int baton_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
  struct epoll_event event;
  memset(&event, 0, sizeof(event));
  event.events = events;
  event.data.u64 = data;
  return epoll_ctl(epfd, op, fd, &event);
}

int baton_epoll_wait(int epfd, void *events, int maxevents, int timeout_ms) {
  return epoll_wait(epfd, (struct epoll_event *)events, maxevents, timeout_ms);
}

int baton_eventfd_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int baton_timerfd_create(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC); }

int baton_timerfd_arm(int fd, uint64_t deadline_ns) {
  if (deadline_ns == 0) {
    deadline_ns = 1;
  }
  struct itimerspec spec;
  memset(&spec, 0, sizeof(spec));
  spec.it_value.tv_sec = (time_t)(deadline_ns / 1000000000u);
  spec.it_value.tv_nsec = (long)(deadline_ns % 1000000000u);
  return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL);
}

int baton_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int baton_available_cpus(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) {
      return count;
    }
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? (int)online : 1;
}

int baton_set_thread_name(const char *name) {
  char truncated[16];
  strncpy(truncated, name, sizeof(truncated) - 1);
  truncated[sizeof(truncated) - 1] = '\0';
  return pthread_setname_np(pthread_self(), truncated);
}

int baton_get_thread_name(char *buffer, size_t size) { return pthread_getname_np(pthread_self(), buffer, size); }

int baton_readable_bytes(int fd) {
  int count = 0;
  if (ioctl(fd, FIONREAD, &count) < 0) return -1;
  return count;
}
