#!/usr/bin/env bash
# tests/integration/test_examples.sh BUILD_DIR SOURCE_DIR WORK_DIR
# Installs the build to a temporary prefix, builds tools/examples against the installed package
# (find_package(moe) and, for the C program, pkg-config), generates a tiny model with `moe gen` and
# runs both examples on it. Exits 77 (skipped) when libmoe.so has not been built.
set -euo pipefail
build=$1 src=$2 work=$3
if [[ ! -e "$build/libmoe.so" ]]; then
  echo "libmoe.so is not built in $build (build the 'moe_shared' target); skipping"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log"
for f in include/moe/moe.h include/moe/moe.hpp lib/libmoe.so bin/moe; do
  [[ -e "$prefix/$f" ]] || { echo "missing after install: $f"; exit 1; }
done
pcdir=$(dirname "$(find "$prefix" -name moe.pc | head -1)")
cfgdir=$(dirname "$(find "$prefix" -name moeConfig.cmake | head -1)")
[[ -n "$pcdir" && -n "$cfgdir" ]] || { echo "moe.pc or moeConfig.cmake not installed"; exit 1; }

# CMake package.
cmake -S "$src/tools/examples" -B "$work/ex" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" > "$work/ex-configure.log"
cmake --build "$work/ex" > "$work/ex-build.log"

# pkg-config (the C example only, built by hand).
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs moe)
libdir=$(PKG_CONFIG_PATH="$pcdir" pkg-config --variable=libdir moe)
cc "$src/tools/examples/example.c" $flags -Wl,-rpath,"$libdir" -o "$work/example_c_pc"

model="$work/tiny.gguf"
"$prefix/bin/moe" gen --preset tiny --vocab phi-3 -o "$model" > /dev/null 2>&1

"$work/ex/moe_example_c" "$model" "Hello" 12
"$work/example_c_pc" "$model" "Hello" 4
"$work/ex/moe_example_cpp" "$model"
# The installed library exports only the C API.
if nm -D --defined-only "$prefix/lib/libmoe.so" | awk '{print $3}' | grep -v '^moe_' | grep -q .; then
  echo "libmoe.so exports symbols outside the moe_ prefix"; exit 1
fi
echo "examples OK"
