#!/usr/bin/env bash
# check-cuda.sh: build the GPU path (`cargo build --release --features cuda`) on a machine that has
# no GPU and no system CUDA toolkit.
#
# Why: `--features cuda` pulls in candle's CUDA backend. candle-kernels compiles its .cu kernels with
# nvcc at build time (PTX plus a static libmoe.a), and cudarc links the CUDA libraries directly. The
# GPU build can break without anyone noticing unless it is compiled somewhere, and the developer
# and CI machines have no GPU. This script gets everything the build needs from PyPI wheels, so the
# GPU path compiles and links on any Linux x86_64 machine.
#
# What it does:
#   1. Installs NVIDIA's CUDA 13.2 wheels (nvcc, cicc, crt and runtime headers, CCCL, NVRTC, cuBLAS,
#      cuRAND) into a venv outside the repository:
#      ${MAMMOFLOW_CUDA_VENV:-$HOME/.cache/mammoflow/cuda-venv}. pip is skipped when the pinned set
#      is already installed.
#      The CUDA 12 wheels can't be used: nvidia-cuda-nvcc-cu12 ships only ptxas, with no nvcc,
#      cicc, cudafe++ or fatbinary. The CUDA 13 wheels ship the whole compiler and install into
#      one toolkit-shaped tree: site-packages/nvidia/cu13/{bin,include,lib,nvvm}.
#   2. Completes that tree into a CUDA_HOME ($VENV/cuda links to it): adds the unversioned
#      libX.so links the linker wants, and a link-only libcuda.so stub in lib/stubs. The real
#      libcuda ships with the GPU driver and is in no wheel, so the stub is generated from cuda.h.
#      Then it exports PATH, CUDA_HOME/CUDA_PATH/CUDA_ROOT, CUDA_COMPUTE_CAP (candle-kernels'
#      build script would otherwise ask nvidia-smi for it), CUDARC_CUDA_VERSION and LIBRARY_PATH.
#   3. Smoke-tests the toolchain. A small .cu file that includes cuda_runtime.h, cuda_fp16.h and
#      cuda_bf16.h is compiled to PTX and to an object. Then a C program is linked against every
#      library the real build links (cuda, cudart, nvrtc, curand, cublas, cublasLt, stdc++).
#   4. Runs `cargo build --release --features cuda` from the repository root and prints the
#      elapsed time. `--setup-only` stops before this step.
#
# The binary this builds needs a real driver to run: run it on a GPU machine, with LD_LIBRARY_PATH
# set to $CUDA_HOME/lib. Don't add lib/stubs to LD_LIBRARY_PATH.
#
# Usage: scripts/check-cuda.sh [--setup-only] [extra cargo build args...]
# Environment: MAMMOFLOW_CUDA_VENV (venv location), CUDA_COMPUTE_CAP (default 80),
#              MAMMOFLOW_PYTHON (python used to create the venv, default python3).
set -euo pipefail

start_ts=$(date +%s)
setup_only=0
if [ "${1:-}" = "--setup-only" ]; then
    setup_only=1
    shift
fi

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MAMMOFLOW_CUDA_VENV:-$HOME/.cache/mammoflow/cuda-venv}"
python="${MAMMOFLOW_PYTHON:-python3}"

# One CUDA release (13.2 update 1) for every component. cuBLAS and cuRAND have their own version
# numbers; these are the versions that go with CUDA 13.2. The cudarc that candle 0.11 uses knows
# CUDA 13.2 (see SUPPORTED_CUDA_VERSIONS in its build.rs).
cuda_major_minor="13.2"
packages=(
    nvidia-cuda-nvcc==13.2.86    # nvcc, cudafe++, fatbinary, nvlink, ptxas, nvcc.profile
    nvidia-nvvm==13.2.86         # cicc, libnvvm, libdevice
    nvidia-cuda-crt==13.2.86     # crt/ headers nvcc needs (host_defines.h, ...)
    nvidia-cuda-runtime==13.2.86 # cuda.h, cuda_runtime.h, cuda_fp16/bf16/fp8.h, mma.h, libcudart
    nvidia-cuda-cccl==13.2.86    # include/cccl: cuda/std/*, thrust, cub (sort.cu uses thrust)
    nvidia-cuda-nvrtc==13.2.86   # libnvrtc (cudarc links -lnvrtc)
    nvidia-cublas==13.3.0.5      # libcublas, libcublasLt (cudarc links -lcublas -lcublasLt)
    nvidia-curand==10.4.2.66     # libcurand (cudarc links -lcurand)
)

if [[ "$venv" == "$repo_root" || "$venv" == "$repo_root"/* ]]; then
    echo "check-cuda: MAMMOFLOW_CUDA_VENV=$venv is inside the repository; put it outside" >&2
    exit 1
fi

# ---- 1. pip install (idempotent) -----------------------------------------------------------------
stamp="$venv/.mammoflow-cuda-packages"
wanted="$(printf '%s\n' "${packages[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    echo "check-cuda: CUDA wheels already installed in $venv"
else
    echo "check-cuda: installing CUDA $cuda_major_minor wheels into $venv"
    mkdir -p "$(dirname "$venv")"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    # --no-deps: the nvcc wheel's own dependencies are unpinned and would pull the newest CUDA;
    # every dependency is listed above with a pinned version.
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps --quiet "${packages[@]}"
    printf '%s\n' "$wanted" >"$stamp"
fi

# ---- 2. CUDA_HOME layout -----------------------------------------------------------------------
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cuda_tree="$site/nvidia/cu13"
if [ ! -x "$cuda_tree/bin/nvcc" ]; then
    echo "check-cuda: $cuda_tree/bin/nvcc is missing; delete $venv and run again" >&2
    exit 1
fi
ln -sfn "$cuda_tree" "$venv/cuda"
cuda_home="$venv/cuda"

# Unversioned names for the linker (-lcudart, -lcublas, ...), as a toolkit install has them.
for lib in "$cuda_home"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    case "$base" in
        libnvrtc-builtins*) continue ;;
    esac
    ln -sfn "$base" "$cuda_home/lib/${base%%.so.*}.so"
done

# libcuda.so is the driver's library and no wheel ships it. cudarc (dynamic-linking) links
# -lcuda, so the linker needs a stub that exports the driver API. Every cu* name that cuda.h
# declares or maps to (_v2 and per-thread-stream variants included) becomes a dummy function. The
# soname is libcuda.so.1, so the binary loads the real driver library at run time.
stub_dir="$cuda_home/lib/stubs"
if [ ! -f "$stub_dir/libcuda.so" ] || [ "$cuda_home/include/cuda.h" -nt "$stub_dir/libcuda.so" ]; then
    mkdir -p "$stub_dir"
    tmp_stub="$(mktemp -d)"
    {
        grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$cuda_home/include/cuda.h"
        for defs in "" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM" "-D__CUDA_API_VERSION_INTERNAL"; do
            # shellcheck disable=SC2086
            echo '#include <cuda.h>' | gcc -E -P $defs -I"$cuda_home/include" -x c - |
                grep -ohE '\bcu[A-Z][A-Za-z0-9_]*'
        done
        printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop # cudaProfiler.h
    } | sort -u | sed 's/.*/int &(void) { return 999; }/' >"$tmp_stub/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub_dir/libcuda.so" "$tmp_stub/libcuda_stub.c"
    rm -rf "$tmp_stub"
fi

export CUDA_HOME="$cuda_home"
export CUDA_PATH="$cuda_home"
export CUDA_ROOT="$cuda_home"
export PATH="$cuda_home/bin:$PATH"
# candle-kernels' build.rs (via cudaforge) reads CUDA_COMPUTE_CAP and only falls back to nvidia-smi.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# cudarc (feature cuda-version-from-build-system) otherwise parses `nvcc --version`. It reads this
# variable first, in the form MAJOR0MINOR0.
export CUDARC_CUDA_VERSION="${cuda_major_minor%%.*}0${cuda_major_minor#*.}0"
# candle-kernels links -lcudart and cudarc links -lcuda etc.; cudarc adds $CUDA_HOME/lib{,/stubs}
# to the search path itself. LIBRARY_PATH (read by the cc linker driver) makes sure of it.
export LIBRARY_PATH="$cuda_home/lib:$stub_dir${LIBRARY_PATH:+:$LIBRARY_PATH}"

nvcc_release="$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
if [ "$nvcc_release" != "$cuda_major_minor" ]; then
    echo "check-cuda: nvcc reports release '$nvcc_release', expected $cuda_major_minor" >&2
    exit 1
fi

# ---- 3. smoke test ------------------------------------------------------------------------------
smoke="$(mktemp -d)"
trap 'rm -rf "$smoke"' EXIT
cat >"$smoke/smoke.cu" <<'EOF'
#include <cuda.h>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <mma.h>
#include <cuda/std/limits>
extern "C" __global__ void smoke_axpy(const __nv_bfloat16 *x, __nv_bfloat16 *y, __half a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && n < cuda::std::numeric_limits<int>::max())
        y[i] = __float2bfloat16(__half2float(a) * __bfloat162float(x[i]) + __bfloat162float(y[i]));
}
EOF
sm="sm_${CUDA_COMPUTE_CAP}"
gencode="-gencode=arch=compute_${CUDA_COMPUTE_CAP},code=sm_${CUDA_COMPUTE_CAP}"
# PTX as in the brief, then as cudaforge runs it for candle-kernels' PTX build.
nvcc --ptx -arch="$sm" -std=c++17 -o "$smoke/smoke.ptx" "$smoke/smoke.cu"
nvcc "$gencode" --ptx --default-stream per-thread --output-directory "$smoke" \
    --expt-relaxed-constexpr -std=c++17 -O3 "$smoke/smoke.cu"
grep -q "^\.target $sm" "$smoke/smoke.ptx"
# Object plus static library, as cudaforge builds libmoe.a.
nvcc "$gencode" -c -o "$smoke/smoke.o" --default-stream per-thread --expt-relaxed-constexpr \
    -std=c++17 -O3 -Xcompiler -fPIC "$smoke/smoke.cu"
nvcc --lib -o "$smoke/libsmoke.a" "$smoke/smoke.o"
# Link against everything the mammoflow binary links with --features cuda.
cat >"$smoke/link.c" <<'EOF'
int cuInit(unsigned int);
int cudaGetDeviceCount(int *);
int nvrtcVersion(int *, int *);
int curandCreateGenerator(void *, int);
int cublasCreate_v2(void *);
int cublasLtCreate(void *);
int main(int argc, char **argv) {
    (void)argv;
    if (argc > 100) { /* never runs: only the link is checked */
        int n; void *h;
        cuInit(0); cudaGetDeviceCount(&n); nvrtcVersion(&n, &n);
        curandCreateGenerator(&h, 100); cublasCreate_v2(&h); cublasLtCreate(&h);
    }
    return 0;
}
EOF
gcc -o "$smoke/link" "$smoke/link.c" -L"$smoke" -Wl,--whole-archive -lsmoke -Wl,--no-whole-archive \
    -lcuda -lcudart -lnvrtc -lcurand -lcublas -lcublasLt -lstdc++

echo "check-cuda: toolchain ready ($(nvcc --version | tail -n 2 | head -n 1))"
echo "  CUDA_HOME=$CUDA_HOME"
echo "  CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION"
echo "  setup took $(($(date +%s) - start_ts)) s"

if [ "$setup_only" = 1 ]; then
    exit 0
fi

# ---- 4. the GPU build ---------------------------------------------------------------------------
cd "$repo_root"
build_ts=$(date +%s)
cargo build --release --features cuda "$@"
end_ts=$(date +%s)
echo "check-cuda: cargo build --release --features cuda OK in $((end_ts - build_ts)) s (total $((end_ts - start_ts)) s)"
