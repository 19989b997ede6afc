/*
 * can_rx: the agent's SocketCAN socket as a small Node-API addon (C, node_api.h and libuv only).
 *
 * Contract. open() makes a raw CAN socket (CAN_RAW) bound to one interface: CAN FD frames on, the kernel receive
 * filters and error mask the caller gives, SO_RCVBUF as asked (what the kernel granted goes to stats[1]),
 * SO_RXQ_OVFL (the kernel's drop counter rides on each frame as a control message), SO_TIMESTAMPNS (the kernel's
 * receive time as a control message, instead of an ioctl per frame), non-blocking. read() takes up to N queued
 * frames with ONE recvmmsg() straight into the caller's ArrayBuffer of N fixed slots (the layout below) and returns
 * how many; it creates no JavaScript value but the returned number. arm() asks for ONE call of the readable callback
 * (a libuv poll that stops itself when it fires), so JavaScript decides when it wants to hear of the socket again:
 * under load it drains and re-arms after a short pause, so the process wakes a few hundred times a second, not once
 * per frame; idle, nothing runs. write() sends one frame on the same socket (so an endpoint never hears its own).
 * close() stops the poll and closes the socket; it is idempotent and safe from inside the callback.
 *
 * Failure behaviour. open() throws an Error whose `code` is the errno name (ENODEV, ENETDOWN, EAFNOSUPPORT...) and
 * whose message names the interface and the step that failed. read() and write() never throw for the socket's
 * state: they return -errno (read: 0 when nothing is queued), so the hot path needs no try/catch; a bad argument is
 * a TypeError. A socket error (the interface went down: ENETDOWN; vanished: ENODEV) makes the poll fire with a
 * negative status, and the next read() returns it. An exception thrown by the callback is reported as an uncaught
 * exception, as for any other event; nothing here aborts the process.
 *
 * Slot layout (SLOT_BYTES = 88, host byte order; slot i starts at i * 88, so the double is 8-aligned):
 *   0..71   struct canfd_frame as the kernel wrote it: can_id with its EFF/RTR/ERR flags (u32 at 0), len (u8 at 4),
 *           flags (u8 at 5: BRS, ESI, FDF), data (64 bytes at 8). A classic frame fills the first 16 bytes.
 *   72..79  the kernel receive time, seconds since the epoch (f64); 0 when the frame had no timestamp.
 *   80..83  the frame's size as received (u32): CANFD_MTU (72) for a CAN FD frame, CAN_MTU (16) for a classic one.
 *   84..87  reserved, 0.
 * stats (a Uint32Array of at least 2): [0] the kernel's drop counter for this socket as last seen (SO_RXQ_OVFL; it
 * counts from the socket's creation and only travels with a received frame), [1] the receive buffer granted (bytes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <linux/can.h>
#include <linux/can/raw.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif
#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif

#define SLOT_BYTES 88
#define SLOT_TS_OFFSET 72
#define SLOT_SIZE_OFFSET 80
#define MAX_FILTERS 512
/* Room for a timespec (16 bytes on 64-bit and time64 ABIs) and a u32, with their headers. */
#define CONTROL_BYTES 96

typedef struct can_rx {
  int fd;
  int timestamps;
  int poll_started; /* uv_poll_init done: the handle must go through uv_close */
  int armed;
  int finalized;    /* JavaScript let go of the external */
  int uv_closed;    /* uv_close's callback ran */
  napi_env env;
  uv_poll_t poll;
  napi_ref callback;
  napi_ref slots_ref;
  napi_ref stats_ref;
  napi_async_context async;
  uint8_t *slots;
  uint32_t nslots;
  uint32_t *stats;
  struct mmsghdr *msgs;
  struct iovec *iov;
  uint8_t *control;
} can_rx;

/* ---- errors -------------------------------------------------------------------------------------------------- */

/* The names the agent tells apart; any other errno is named ERRNO<n> (its message still says what it was). */
static const char *errno_name(int e, char *buf, size_t size) {
  switch (e) {
    case ENODEV: return "ENODEV";
    case ENETDOWN: return "ENETDOWN";
    case ENXIO: return "ENXIO";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EBADF: return "EBADF";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EIO: return "EIO";
    default: snprintf(buf, size, "ERRNO%d", e); return buf;
  }
}

/* Throws Error(`<ifname>: <step>: <strerror>`) with `code` = the errno name and `errno` = the number. */
static void throw_errno(napi_env env, const char *ifname, const char *step, int e) {
  char text[256], name[24];
  snprintf(text, sizeof text, "%s: %s: %s", ifname, step, strerror(e));
  napi_value msg, err, code, num;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, errno_name(e, name, sizeof name), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &err);
  napi_create_int32(env, e, &num);
  napi_set_named_property(env, err, "errno", num);
  napi_throw(env, err);
}

#define CHECK_NAPI(env, call)                                                       \
  do {                                                                              \
    if ((call) != napi_ok) {                                                        \
      bool pending = false;                                                         \
      napi_is_exception_pending((env), &pending);                                  \
      if (!pending) napi_throw_error((env), "ERR_CAN_RX", "can-rx: " #call " failed"); \
      return NULL;                                                                  \
    }                                                                               \
  } while (0)

static napi_value type_error(napi_env env, const char *text) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", text);
  return NULL;
}

/* ---- lifetime ------------------------------------------------------------------------------------------------ */

static void free_rx(can_rx *rx) {
  free(rx->msgs);
  free(rx->iov);
  free(rx->control);
  free(rx);
}

static void on_uv_closed(uv_handle_t *handle) {
  can_rx *rx = handle->data;
  rx->uv_closed = 1;
  if (rx->finalized) free_rx(rx);
}

/* Stops everything; the memory goes when both libuv and JavaScript are done with it. */
static void shut(can_rx *rx, int from_finalizer) {
  if (rx->fd >= 0) {
    if (rx->poll_started) {
      uv_poll_stop(&rx->poll);
      uv_close((uv_handle_t *)&rx->poll, on_uv_closed);
    }
    close(rx->fd);
    rx->fd = -1;
  }
  rx->armed = 0;
  if (!from_finalizer) {
    napi_env env = rx->env;
    if (rx->callback) napi_delete_reference(env, rx->callback);
    if (rx->slots_ref) napi_delete_reference(env, rx->slots_ref);
    if (rx->stats_ref) napi_delete_reference(env, rx->stats_ref);
    if (rx->async) napi_async_destroy(env, rx->async);
    rx->callback = rx->slots_ref = rx->stats_ref = NULL;
    rx->async = NULL;
    rx->slots = NULL;
    rx->stats = NULL;
  }
}

static void finalize_rx(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  can_rx *rx = data;
  rx->finalized = 1;
  /* The callback reference keeps the endpoint, and so the external, alive while open: this runs for a closed
   * socket, or at the end of the environment, when references may no longer be touched. */
  shut(rx, 1);
  if (!rx->poll_started || rx->uv_closed) free_rx(rx);
}

static can_rx *unwrap(napi_env env, napi_value value) {
  void *data = NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "can-rx: not a socket handle");
    return NULL;
  }
  return data;
}

/* ---- readiness ----------------------------------------------------------------------------------------------- */

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  can_rx *rx = handle->data;
  /* One call per arm(): JavaScript re-arms when it wants to hear again. */
  uv_poll_stop(handle);
  rx->armed = 0;
  if (rx->fd < 0 || rx->callback == NULL) return;
  napi_env env = rx->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, arg, result;
  /* napi_make_callback wants an object as `this` (undefined is refused): the global one. */
  if (napi_get_reference_value(env, rx->callback, &fn) == napi_ok && fn != NULL && napi_get_global(env, &recv) == napi_ok &&
      napi_create_int32(env, status, &arg) == napi_ok) {
    if (napi_make_callback(env, rx->async, recv, fn, 1, &arg, &result) == napi_pending_exception) {
      napi_value exception;
      if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) napi_fatal_exception(env, exception);
    }
  }
  napi_close_handle_scope(env, scope);
}

/* ---- open ---------------------------------------------------------------------------------------------------- */

static int get_u32_property(napi_env env, napi_value object, const char *name, uint32_t *out, int *present) {
  bool has = false;
  *present = 0;
  if (napi_has_named_property(env, object, name, &has) != napi_ok) return -1;
  if (!has) return 0;
  napi_value v;
  napi_valuetype type;
  if (napi_get_named_property(env, object, name, &v) != napi_ok || napi_typeof(env, v, &type) != napi_ok) return -1;
  if (type == napi_undefined || type == napi_null) return 0;
  if (type != napi_number || napi_get_value_uint32(env, v, out) != napi_ok) return -1;
  *present = 1;
  return 0;
}

/*
 * open(ifname, { rcvbuf?, errorMask?, timestamps?, filters? }, slots: ArrayBuffer, stats: Uint32Array,
 *      onReadable: (status) => void) -> handle
 * filters: a Uint32Array of id/mask pairs (the kernel's struct can_filter); absent or empty: every frame.
 */
static napi_value rx_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) return type_error(env, "can-rx open(ifname, options, slots, stats, onReadable): 5 arguments");

  /* Longer than the kernel takes (IFNAMSIZ - 1), but long enough to name a wrong one in the error. */
  char ifname[64];
  size_t ifname_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], ifname, sizeof ifname, &ifname_len) != napi_ok)
    return type_error(env, "can-rx open: the interface name must be a string");
  if (ifname_len == 0 || ifname_len >= IFNAMSIZ) {
    throw_errno(env, ifname_len == 0 ? "(empty)" : ifname, "interface name empty or longer than 15 bytes", ENODEV);
    return NULL;
  }

  napi_valuetype type;
  CHECK_NAPI(env, napi_typeof(env, argv[1], &type));
  if (type != napi_object) return type_error(env, "can-rx open: options must be an object");
  uint32_t rcvbuf = 0, err_mask = 0;
  int has_rcvbuf = 0, has_err_mask = 0;
  if (get_u32_property(env, argv[1], "rcvbuf", &rcvbuf, &has_rcvbuf) != 0) return type_error(env, "can-rx open: options.rcvbuf must be a number of bytes");
  if (get_u32_property(env, argv[1], "errorMask", &err_mask, &has_err_mask) != 0) return type_error(env, "can-rx open: options.errorMask must be a number");
  bool timestamps = true;
  {
    bool has = false;
    CHECK_NAPI(env, napi_has_named_property(env, argv[1], "timestamps", &has));
    if (has) {
      napi_value v;
      CHECK_NAPI(env, napi_get_named_property(env, argv[1], "timestamps", &v));
      CHECK_NAPI(env, napi_typeof(env, v, &type));
      if (type == napi_boolean) CHECK_NAPI(env, napi_get_value_bool(env, v, &timestamps));
      else if (type != napi_undefined) return type_error(env, "can-rx open: options.timestamps must be a boolean");
    }
  }
  struct can_filter *filters = NULL;
  size_t nfilters = 0;
  {
    bool has = false;
    CHECK_NAPI(env, napi_has_named_property(env, argv[1], "filters", &has));
    if (has) {
      napi_value v;
      CHECK_NAPI(env, napi_get_named_property(env, argv[1], "filters", &v));
      CHECK_NAPI(env, napi_typeof(env, v, &type));
      if (type != napi_undefined && type != napi_null) {
        bool is_typed = false;
        napi_typedarray_type ttype;
        size_t length = 0;
        void *data = NULL;
        CHECK_NAPI(env, napi_is_typedarray(env, v, &is_typed));
        if (!is_typed || napi_get_typedarray_info(env, v, &ttype, &length, &data, NULL, NULL) != napi_ok || ttype != napi_uint32_array ||
            length % 2 != 0)
          return type_error(env, "can-rx open: options.filters must be a Uint32Array of id/mask pairs");
        if (length / 2 > MAX_FILTERS) {
          throw_errno(env, ifname, "more than 512 receive filters", EINVAL);
          return NULL;
        }
        nfilters = length / 2;
        filters = (struct can_filter *)data; /* same layout: two u32 per filter */
      }
    }
  }

  bool is_ab = false;
  CHECK_NAPI(env, napi_is_arraybuffer(env, argv[2], &is_ab));
  void *slots = NULL;
  size_t slots_len = 0;
  if (!is_ab) return type_error(env, "can-rx open: slots must be an ArrayBuffer");
  CHECK_NAPI(env, napi_get_arraybuffer_info(env, argv[2], &slots, &slots_len));
  if (slots_len < SLOT_BYTES || slots_len / SLOT_BYTES > 4096) return type_error(env, "can-rx open: slots must hold 1 to 4096 slots of 88 bytes");

  bool is_typed = false;
  napi_typedarray_type stats_type;
  size_t stats_len = 0;
  void *stats = NULL;
  CHECK_NAPI(env, napi_is_typedarray(env, argv[3], &is_typed));
  if (!is_typed || napi_get_typedarray_info(env, argv[3], &stats_type, &stats_len, &stats, NULL, NULL) != napi_ok || stats_type != napi_uint32_array ||
      stats_len < 2)
    return type_error(env, "can-rx open: stats must be a Uint32Array of at least 2");

  CHECK_NAPI(env, napi_typeof(env, argv[4], &type));
  if (type != napi_function) return type_error(env, "can-rx open: onReadable must be a function");

  /* The socket. */
  int fd = socket(PF_CAN, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, CAN_RAW);
  if (fd < 0) {
    throw_errno(env, ifname, "cannot create a CAN socket", errno);
    return NULL;
  }
  const char *step = NULL;
  int on = 1;
  unsigned int ifindex = if_nametoindex(ifname);
  if (ifindex == 0) {
    step = "no such interface";
    goto fail;
  }
  if (setsockopt(fd, SOL_CAN_RAW, CAN_RAW_FD_FRAMES, &on, sizeof on) != 0) {
    step = "cannot enable CAN FD frames";
    goto fail;
  }
  if (nfilters > 0 && setsockopt(fd, SOL_CAN_RAW, CAN_RAW_FILTER, filters, (socklen_t)(nfilters * sizeof(struct can_filter))) != 0) {
    step = "cannot set the receive filters";
    goto fail;
  }
  {
    can_err_mask_t mask = has_err_mask ? (can_err_mask_t)(err_mask & CAN_ERR_MASK) : 0;
    if (setsockopt(fd, SOL_CAN_RAW, CAN_RAW_ERR_FILTER, &mask, sizeof mask) != 0) {
      step = "cannot set the error frame mask";
      goto fail;
    }
  }
  if (has_rcvbuf && rcvbuf > 0) {
    int size = rcvbuf > INT32_MAX / 2 ? INT32_MAX / 2 : (int)rcvbuf;
    /* FORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN); otherwise the kernel caps SO_RCVBUF at it. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0) {
      step = "cannot set the receive buffer";
      goto fail;
    }
  }
  if (setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on) != 0) {
    step = "cannot enable the drop counter";
    goto fail;
  }
  if (timestamps && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) {
    step = "cannot enable kernel timestamps";
    goto fail;
  }
  {
    struct sockaddr_can addr;
    memset(&addr, 0, sizeof addr);
    addr.can_family = AF_CAN;
    addr.can_ifindex = (int)ifindex;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
      step = "cannot bind to the interface";
      goto fail;
    }
  }
  int granted = 0;
  socklen_t granted_len = sizeof granted;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &granted_len) != 0) granted = 0;

  can_rx *rx = calloc(1, sizeof *rx);
  uint32_t nslots = (uint32_t)(slots_len / SLOT_BYTES);
  if (rx != NULL) {
    rx->msgs = calloc(nslots, sizeof *rx->msgs);
    rx->iov = calloc(nslots, sizeof *rx->iov);
    rx->control = calloc(nslots, CONTROL_BYTES);
  }
  if (rx == NULL || rx->msgs == NULL || rx->iov == NULL || rx->control == NULL) {
    if (rx != NULL) free_rx(rx);
    close(fd);
    throw_errno(env, ifname, "cannot allocate the receive vectors", ENOMEM);
    return NULL;
  }
  rx->fd = fd;
  rx->env = env;
  rx->timestamps = timestamps;
  rx->slots = slots;
  rx->nslots = nslots;
  rx->stats = stats;
  rx->stats[0] = 0;
  rx->stats[1] = (uint32_t)(granted > 0 ? granted : 0);
  memset(rx->slots, 0, (size_t)nslots * SLOT_BYTES);
  for (uint32_t i = 0; i < nslots; i++) {
    rx->iov[i].iov_base = rx->slots + (size_t)i * SLOT_BYTES;
    rx->iov[i].iov_len = CANFD_MTU;
    rx->msgs[i].msg_hdr.msg_iov = &rx->iov[i];
    rx->msgs[i].msg_hdr.msg_iovlen = 1;
    rx->msgs[i].msg_hdr.msg_control = rx->control + (size_t)i * CONTROL_BYTES;
    rx->msgs[i].msg_hdr.msg_controllen = CONTROL_BYTES;
  }

  uv_loop_t *loop = NULL;
  napi_value handle, resource_name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init_socket(loop, &rx->poll, fd) != 0) {
    close(fd);
    free_rx(rx);
    napi_throw_error(env, "ERR_CAN_RX", "can-rx open: cannot watch the socket");
    return NULL;
  }
  rx->poll.data = rx;
  rx->poll_started = 1;
  if (napi_create_reference(env, argv[4], 1, &rx->callback) != napi_ok || napi_create_reference(env, argv[2], 1, &rx->slots_ref) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &rx->stats_ref) != napi_ok ||
      napi_create_string_utf8(env, "CanReceive", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_async_init(env, NULL, resource_name, &rx->async) != napi_ok || napi_create_external(env, rx, finalize_rx, NULL, &handle) != napi_ok) {
    shut(rx, 0);
    rx->finalized = 1; /* no external will ever be finalized: on_uv_closed frees */
    napi_throw_error(env, "ERR_CAN_RX", "can-rx open: cannot create the handle");
    return NULL;
  }
  return handle;

fail: {
  int e = errno;
  close(fd);
  throw_errno(env, ifname, step, e);
  return NULL;
}
}

/* ---- read ---------------------------------------------------------------------------------------------------- */

/* read(handle) -> frames read into slots 0..n-1; 0 when nothing is queued; -errno when the socket failed. */
static napi_value rx_read(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return type_error(env, "can-rx read(handle)");
  can_rx *rx = unwrap(env, argv[0]);
  if (rx == NULL) return NULL;
  int n;
  if (rx->fd < 0) {
    n = -EBADF;
  } else {
    do {
      n = recvmmsg(rx->fd, rx->msgs, rx->nslots, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) n = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
  }
  for (int i = 0; i < n; i++) {
    struct msghdr *h = &rx->msgs[i].msg_hdr;
    uint8_t *slot = rx->slots + (size_t)i * SLOT_BYTES;
    double ts = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec t;
        memcpy(&t, CMSG_DATA(c), sizeof t);
        ts = (double)t.tv_sec + (double)t.tv_nsec / 1e9;
      } else if (c->cmsg_type == SO_RXQ_OVFL) {
        uint32_t drops;
        memcpy(&drops, CMSG_DATA(c), sizeof drops);
        rx->stats[0] = drops;
      }
    }
    uint32_t size = rx->msgs[i].msg_len;
    memcpy(slot + SLOT_TS_OFFSET, &ts, sizeof ts);
    memcpy(slot + SLOT_SIZE_OFFSET, &size, sizeof size);
    /* recvmmsg shrank these to what it wrote: restore them for the next call. */
    h->msg_controllen = CONTROL_BYTES;
    h->msg_flags = 0;
  }
  CHECK_NAPI(env, napi_create_int32(env, n, &result));
  return result;
}

/* ---- arm, write, close ------------------------------------------------------------------------------------- */

/* arm(handle): the next time the socket is readable (or failed), onReadable is called once. A no-op when closed. */
static napi_value rx_arm(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return type_error(env, "can-rx arm(handle)");
  can_rx *rx = unwrap(env, argv[0]);
  if (rx == NULL) return NULL;
  if (rx->fd >= 0 && !rx->armed) {
    int r = uv_poll_start(&rx->poll, UV_READABLE, on_poll);
    if (r != 0) {
      throw_errno(env, "can-rx", "cannot watch the socket", -r);
      return NULL;
    }
    rx->armed = 1;
  }
  return NULL;
}

/* write(handle, canId, data: Uint8Array, fd: boolean, fdFlags) -> bytes written, or -errno (ENOBUFS: queue full). */
static napi_value rx_write(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) return type_error(env, "can-rx write(handle, canId, data, fd, fdFlags)");
  can_rx *rx = unwrap(env, argv[0]);
  if (rx == NULL) return NULL;
  uint32_t can_id = 0, fd_flags = 0;
  bool is_fd = false, is_typed = false;
  napi_typedarray_type ttype;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_value_uint32(env, argv[1], &can_id) != napi_ok) return type_error(env, "can-rx write: canId must be a number");
  CHECK_NAPI(env, napi_is_typedarray(env, argv[2], &is_typed));
  if (!is_typed || napi_get_typedarray_info(env, argv[2], &ttype, &length, &data, NULL, NULL) != napi_ok || ttype != napi_uint8_array)
    return type_error(env, "can-rx write: data must be a Uint8Array");
  if (napi_get_value_bool(env, argv[3], &is_fd) != napi_ok) return type_error(env, "can-rx write: fd must be a boolean");
  if (napi_get_value_uint32(env, argv[4], &fd_flags) != napi_ok) return type_error(env, "can-rx write: fdFlags must be a number");
  if (length > (is_fd ? CANFD_MAX_DLEN : CAN_MAX_DLEN)) return type_error(env, "can-rx write: payload too long for the frame type");
  int n;
  if (rx->fd < 0) {
    n = -EBADF;
  } else {
    struct canfd_frame frame;
    memset(&frame, 0, sizeof frame);
    frame.can_id = can_id;
    frame.len = (uint8_t)length;
    if (is_fd) frame.flags = (uint8_t)fd_flags;
    if (length > 0) memcpy(frame.data, data, length);
    ssize_t w;
    do {
      w = send(rx->fd, &frame, is_fd ? CANFD_MTU : CAN_MTU, MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    n = w < 0 ? -errno : (int)w;
  }
  CHECK_NAPI(env, napi_create_int32(env, n, &result));
  return result;
}

/* close(handle): stops the poll and closes the socket; again, or from inside onReadable, is harmless. */
static napi_value rx_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK_NAPI(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return type_error(env, "can-rx close(handle)");
  can_rx *rx = unwrap(env, argv[0]);
  if (rx == NULL) return NULL;
  if (rx->fd >= 0 || rx->callback != NULL) shut(rx, 0);
  return NULL;
}

/* ---- module -------------------------------------------------------------------------------------------------- */

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, rx_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"read", NULL, rx_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"arm", NULL, rx_arm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, rx_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, rx_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK_NAPI(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  napi_value slot_bytes;
  CHECK_NAPI(env, napi_create_uint32(env, SLOT_BYTES, &slot_bytes));
  CHECK_NAPI(env, napi_set_named_property(env, exports, "slotBytes", slot_bytes));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
