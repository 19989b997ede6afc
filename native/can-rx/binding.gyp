{
  "targets": [
    {
      "target_name": "can_rx",
      "sources": ["can_rx.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
