{
  "targets": [
    {
      "target_name": "dfl_native",
      "sources": [
        "<!@(node -p \"const s=require('./native/sources.json'); s.core.concat(s.cpu, s.addon).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "DFL_BUILD_SYSTEM=\"node-gyp\""],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-fexceptions", "-frtti"],
      "ldflags": ["-fopenmp"]
    }
  ]
}
