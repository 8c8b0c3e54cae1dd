{
  "targets": [
    {
      "target_name": "enclave_native",
      "sources": [
        "src/addon.c",
        "src/socket.c",
        "src/nsm.c",
        "src/loopback.c",
        "src/intarray.c",
        "src/aead.c",
        "src/clock.c",
        "src/process.c",
        "src/origdst.c",
        "src/tcpqueue.c",
        "src/splice.c"
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "conditions": [
        ["OS!='linux'", { "defines": ["ENCLAVE_NATIVE_UNSUPPORTED_OS=1"] }]
      ]
    },
    {
      "target_name": "enclave_die_with_parent",
      "type": "executable",
      # Built after the addon: where the C library's static archive is missing, only this link fails and the
      # addon (all the host bridge needs) is already there (scripts/build-native.mjs says so).
      "dependencies": ["enclave_native"],
      "sources": ["src/die-with-parent.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"],
      "defines": ["_GNU_SOURCE"],
      "ldflags": ["-static"]
    }
  ]
}
