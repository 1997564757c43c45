#!/usr/bin/env bash
# Open MPI from the unpacked prefix, end to end: compiles a 10-line MPI
# program with the prefix's mpicxx, runs it as a singleton (no mpirun: Open
# MPI then starts an orted of its own) and under mpirun with 2 ranks. Each run
# checks an allreduce against its closed form. Source the prefix's env.sh first.
#   bash scripts/gpu/mpi-smoke.sh
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/hello.cpp" <<'CPP'
#include <mpi.h>
#include <cstdio>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0, sum = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  std::printf("mpi-smoke: rank %d of %d, sum of ranks %d (expected %d)\n", rank, size, sum, size * (size - 1) / 2);
  MPI_Finalize();
  return sum == size * (size - 1) / 2 ? 0 : 1;
}
CPP
echo "mpi-smoke: $(command -v mpicxx) -> $(mpicxx --showme:command); Open MPI $(ompi_info --version | head -1 | awk '{print $NF}')"
mpicxx "$work/hello.cpp" -o "$work/hello"
timeout 60 "$work/hello"
timeout 60 mpirun --oversubscribe -np 2 "$work/hello"
