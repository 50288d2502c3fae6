/*
 * echo.c: the loopback limit for Baton's benchmarks. The least work an echo RPC can be: a
 * message is [u32 big-endian length][payload], and the server sends each whole message back.
 * No streams, no flow control, no headers: what is left is the kernel and the wire.
 *
 *   echo server [--port P] [--lifetime S]
 *       one thread, epoll (level-triggered), non-blocking sockets on 127.0.0.1; prints
 *       'listening 127.0.0.1:PORT'; stops on SIGTERM/SIGINT or after S seconds.
 *   echo unary --port P [--concurrency C] [--seconds S] [--warmup W] [--size B]
 *       one connection with C requests outstanding: each reply is answered at once by a new
 *       request, i.e. C closed-loop callers sharing one connection, as in `baton bench unary`.
 *   echo stream --port P [--seconds S] [--warmup W] [--size B]
 *       one connection; one thread writes messages as fast as TCP takes them, another counts
 *       the echoes, as in `baton bench stream`.
 *
 * The clients print the same RESULT lines as `baton bench unary|stream`, with impl=c-epoll.
 * Build: gcc -O2 -Wall -o echo echo.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE (16u << 20)

static int64_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char *what) {
  perror(what);
  exit(1);
}

static uint32_t read_length(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void write_length(uint8_t *p, uint32_t n) {
  p[0] = n >> 24;
  p[1] = n >> 16;
  p[2] = n >> 8;
  p[3] = n;
}

/* A byte queue: bytes [head, tail) of data are pending. */
typedef struct {
  uint8_t *data;
  size_t head, tail, capacity;
} queue_t;

static void queue_make_room(queue_t *q, size_t extra) {
  /* Slide the pending bytes to the front only when that moves no more than it frees, so a
     queue that stays long is grown instead of copied over and over. */
  if (q->head > 0 && q->tail + extra > q->capacity && q->head >= q->tail - q->head) {
    memmove(q->data, q->data + q->head, q->tail - q->head);
    q->tail -= q->head;
    q->head = 0;
  }
  if (q->tail + extra > q->capacity) {
    size_t capacity = q->capacity ? q->capacity : 65536;
    while (capacity < q->tail + extra) capacity *= 2;
    q->data = realloc(q->data, capacity);
    if (!q->data) fail("realloc");
    q->capacity = capacity;
  }
}

static size_t queue_length(const queue_t *q) { return q->tail - q->head; }

/* ---------------------------------------------------------------------------------- options */

typedef struct {
  int port, concurrency, size;
  double seconds, warmup, lifetime;
} options_t;

static void parse(int argc, char **argv, options_t *o) {
  *o = (options_t){.port = 0, .concurrency = 1, .size = 64, .seconds = 5, .warmup = 1, .lifetime = 600};
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) {
      fprintf(stderr, "option %s needs a value\n", argv[i]);
      exit(2);
    }
    const char *name = argv[i], *value = argv[i + 1];
    if (!strcmp(name, "--port")) o->port = atoi(value);
    else if (!strcmp(name, "--concurrency")) o->concurrency = atoi(value);
    else if (!strcmp(name, "--size")) o->size = atoi(value);
    else if (!strcmp(name, "--seconds")) o->seconds = atof(value);
    else if (!strcmp(name, "--warmup")) o->warmup = atof(value);
    else if (!strcmp(name, "--lifetime")) o->lifetime = atof(value);
    else {
      fprintf(stderr, "unknown option %s\n", name);
      exit(2);
    }
  }
  if (o->concurrency < 1 || o->size < 0 || (unsigned)o->size > MAX_MESSAGE) {
    fprintf(stderr, "bad --concurrency or --size\n");
    exit(2);
  }
}

static void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ----------------------------------------------------------------------------------- server */

/* Replies queued beyond this stop the server reading from that peer until it catches up. */
#define HIGH_WATER (4u << 20)
#define READ_SIZE (256u << 10)

typedef struct {
  int fd;
  uint32_t events; /* what epoll watches for this connection */
  queue_t in, out;
} connection_t;

static volatile sig_atomic_t stopping = 0;
static void on_signal(int number) { (void)number; stopping = 1; }

static void close_connection(int epoll, connection_t *c) {
  epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->in.data);
  free(c->out.data);
  free(c);
}

/* Sends what is queued, then watches for what the connection needs next: room to send while
   replies wait, and requests while not too many replies wait. Returns -1 if the peer is gone. */
static int flush_connection(int epoll, connection_t *c) {
  while (queue_length(&c->out) > 0) {
    ssize_t n = send(c->fd, c->out.data + c->out.head, queue_length(&c->out), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) return -1;
    c->out.head += (size_t)n;
  }
  if (queue_length(&c->out) == 0) c->out.head = c->out.tail = 0;
  uint32_t events = (queue_length(&c->out) < HIGH_WATER ? EPOLLIN : 0) | (queue_length(&c->out) > 0 ? EPOLLOUT : 0);
  if (events != c->events) {
    struct epoll_event event = {.events = events, .data.ptr = c};
    epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &event);
    c->events = events;
  }
  return 0;
}

/* Reads once, queues every whole message for sending back. Returns -1 if the peer is gone. */
static int read_connection(connection_t *c) {
  queue_make_room(&c->in, READ_SIZE);
  ssize_t n = recv(c->fd, c->in.data + c->in.tail, c->in.capacity - c->in.tail, 0);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
  if (n <= 0) return -1;
  c->in.tail += (size_t)n;
  while (queue_length(&c->in) >= 4) {
    uint32_t length = read_length(c->in.data + c->in.head);
    if (length > MAX_MESSAGE) return -1;
    if (queue_length(&c->in) < 4 + (size_t)length) {
      queue_make_room(&c->in, 4 + (size_t)length - queue_length(&c->in));
      break;
    }
    queue_make_room(&c->out, 4 + (size_t)length);
    memcpy(c->out.data + c->out.tail, c->in.data + c->in.head, 4 + (size_t)length);
    c->out.tail += 4 + (size_t)length;
    c->in.head += 4 + (size_t)length;
  }
  if (queue_length(&c->in) == 0) c->in.head = c->in.tail = 0;
  return 0;
}

static int serve(const options_t *o) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener < 0) fail("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(o->port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) fail("bind");
  if (listen(listener, 1024) < 0) fail("listen");
  socklen_t length = sizeof address;
  getsockname(listener, (struct sockaddr *)&address, &length);
  printf("listening 127.0.0.1:%d\n", ntohs(address.sin_port));
  fflush(stdout);

  int epoll = epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) fail("epoll_create1");
  struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &event);
  int64_t end = now() + (int64_t)(o->lifetime * 1e9);
  struct epoll_event events[256];
  while (!stopping && now() < end) {
    int ready = epoll_wait(epoll, events, 256, 200);
    for (int i = 0; i < ready; i++) {
      connection_t *c = events[i].data.ptr;
      if (c == NULL) {
        int fd;
        while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          no_delay(fd);
          connection_t *fresh = calloc(1, sizeof *fresh);
          fresh->fd = fd;
          fresh->events = EPOLLIN;
          struct epoll_event added = {.events = EPOLLIN, .data.ptr = fresh};
          epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &added);
        }
        continue;
      }
      int gone = 0;
      if ((events[i].events & (EPOLLERR | EPOLLHUP)) || ((events[i].events & EPOLLIN) && (c->events & EPOLLIN)))
        gone = read_connection(c) < 0;
      if (!gone) gone = flush_connection(epoll, c) < 0;
      if (gone) close_connection(epoll, c);
    }
  }
  close(listener);
  return 0;
}

/* ----------------------------------------------------------------------------------- client */

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket");
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) fail("connect");
  no_delay(fd);
  return fd;
}

static void send_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) fail("send");
    p += sent;
    n -= (size_t)sent;
  }
}

static uint8_t *make_message(int size) {
  uint8_t *message = malloc(4 + (size_t)size);
  write_length(message, (uint32_t)size);
  for (int i = 0; i < size; i++) message[4 + i] = (uint8_t)(i * 31 + 7); /* baton's payload */
  return message;
}

static int compare(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double percentile_us(const int64_t *sorted, size_t n, double p) {
  if (n == 0) return 0;
  size_t rank = (size_t)(p / 100 * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1] / 1e3;
}

static int unary(const options_t *o) {
  int fd = dial(o->port);
  size_t message_length = 4 + (size_t)o->size;
  uint8_t *message = make_message(o->size);
  int64_t *sent_at = malloc(sizeof(int64_t) * (size_t)o->concurrency); /* FIFO of outstanding */
  size_t oldest = 0, latency_count = 0, latency_capacity = 1 << 20;
  int64_t *latencies = malloc(sizeof(int64_t) * latency_capacity);
  queue_t in = {0}, out = {0};

  int64_t start = now(), measure_from = start + (int64_t)(o->warmup * 1e9);
  int64_t end = measure_from + (int64_t)(o->seconds * 1e9), measured_end = 0;
  for (int i = 0; i < o->concurrency; i++) {
    queue_make_room(&out, message_length);
    memcpy(out.data + out.tail, message, message_length);
    out.tail += message_length;
    sent_at[i] = start;
  }
  send_all(fd, out.data, out.tail);
  int outstanding = o->concurrency;
  while (outstanding > 0) {
    queue_make_room(&in, 65536);
    ssize_t n = recv(fd, in.data + in.tail, in.capacity - in.tail, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("recv");
    in.tail += (size_t)n;
    int64_t t = now();
    out.head = out.tail = 0;
    while (queue_length(&in) >= message_length) {
      if (read_length(in.data + in.head) != (uint32_t)o->size) {
        fprintf(stderr, "a reply had the wrong length\n");
        return 1;
      }
      in.head += message_length;
      outstanding--;
      if (sent_at[oldest] >= measure_from && t < end) {
        if (latency_count == latency_capacity) {
          latency_capacity *= 2;
          latencies = realloc(latencies, sizeof(int64_t) * latency_capacity);
        }
        latencies[latency_count++] = t - sent_at[oldest];
      }
      if (t < end) { /* the caller whose reply this was calls again */
        sent_at[oldest] = t;
        queue_make_room(&out, message_length);
        memcpy(out.data + out.tail, message, message_length);
        out.tail += message_length;
        outstanding++;
      } else if (measured_end == 0) {
        measured_end = t;
      }
      oldest = (oldest + 1) % (size_t)o->concurrency;
    }
    if (queue_length(&in) == 0) in.head = in.tail = 0;
    if (out.tail > 0) send_all(fd, out.data, out.tail);
  }
  close(fd);
  if (measured_end == 0) measured_end = now();
  double seconds = (double)(measured_end - measure_from) / 1e9;
  qsort(latencies, latency_count, sizeof(int64_t), compare);
  printf("RESULT unary impl=c-epoll conc=%d size=%d secs=%.2f calls=%zu errors=0 rps=%.0f "
         "p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f\n",
         o->concurrency, o->size, seconds, latency_count, (double)latency_count / seconds,
         percentile_us(latencies, latency_count, 50), percentile_us(latencies, latency_count, 90),
         percentile_us(latencies, latency_count, 99),
         latency_count ? latencies[latency_count - 1] / 1e3 : 0.0);
  return 0;
}

typedef struct {
  int fd, size;
  int64_t end;
} writer_t;

/* Writes messages in batches of about 64 KiB until `end`, then half-closes. */
static void *write_messages(void *argument) {
  writer_t *w = argument;
  size_t message_length = 4 + (size_t)w->size;
  uint8_t *message = make_message(w->size);
  size_t per_batch = message_length >= 65536 ? 1 : 65536 / message_length;
  uint8_t *batch = malloc(per_batch * message_length);
  for (size_t i = 0; i < per_batch; i++) memcpy(batch + i * message_length, message, message_length);
  while (now() < w->end) send_all(w->fd, batch, per_batch * message_length);
  shutdown(w->fd, SHUT_WR);
  return NULL;
}

static int stream(const options_t *o) {
  int fd = dial(o->port);
  int64_t start = now(), measure_from = start + (int64_t)(o->warmup * 1e9);
  writer_t writer = {.fd = fd, .size = o->size, .end = measure_from + (int64_t)(o->seconds * 1e9)};
  pthread_t thread;
  pthread_create(&thread, NULL, write_messages, &writer);

  size_t message_length = 4 + (size_t)o->size, pending = 0; /* bytes of the message under way */
  uint64_t received = 0, at_start = 0, at_end = 0;
  int64_t started_at = 0, ended_at = 0;
  size_t capacity = 1 << 20;
  uint8_t *buffer = malloc(capacity);
  for (;;) {
    ssize_t n = recv(fd, buffer, capacity, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending += (size_t)n; /* every message has the same length: count, don't parse */
    received += pending / message_length;
    pending %= message_length;
    int64_t t = now();
    if (started_at == 0 && t >= measure_from) { started_at = t; at_start = received; }
    if (ended_at == 0 && t >= writer.end) { ended_at = t; at_end = received; }
  }
  pthread_join(thread, NULL);
  close(fd);
  if (started_at == 0 || ended_at == 0 || at_end <= at_start) {
    printf("RESULT stream impl=c-epoll size=%d error=too-few-messages total=%llu\n", o->size,
           (unsigned long long)received);
    return 1;
  }
  double seconds = (double)(ended_at - started_at) / 1e9;
  double rate = (double)(at_end - at_start) / seconds;
  printf("RESULT stream impl=c-epoll size=%d secs=%.2f msgs=%llu msgs_per_s=%.0f MB_per_s=%.1f\n",
         o->size, seconds, (unsigned long long)(at_end - at_start), rate, rate * o->size / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  options_t o;
  if (argc < 2) {
    fprintf(stderr, "usage: echo server|unary|stream [--port P] [--concurrency C] [--seconds S] "
                    "[--warmup W] [--size B] [--lifetime S]\n");
    return 2;
  }
  parse(argc, argv, &o);
  if (!strcmp(argv[1], "server")) return serve(&o);
  if (o.port <= 0) {
    fprintf(stderr, "--port is required\n");
    return 2;
  }
  if (!strcmp(argv[1], "unary")) return unary(&o);
  if (!strcmp(argv[1], "stream")) return stream(&o);
  fprintf(stderr, "unknown command %s\n", argv[1]);
  return 2;
}
