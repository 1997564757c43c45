#!/usr/bin/env bash
# Unpacks the fetched .deb files into a private prefix with dpkg -x (never
# into /, no maintainer scripts, no root needed), makes the few links their
# install scripts would have made, and writes PREFIX/env.sh, which puts the
# prefix on PATH, LD_LIBRARY_PATH and CMAKE_PREFIX_PATH and relocates Open MPI
# and PMIx. Does nothing when PREFIX already holds these exact packages.
#   bash scripts/gpu/unpack-deps.sh DEBS_DIR PREFIX
set -euo pipefail
debs=$(cd "$1" && pwd)
mkdir -p "$2"
prefix=$(cd "$2" && pwd)
stamp="$prefix/.unpacked-from"

# The packages and this script: a changed script unpacks afresh.
want=$(cat "$debs/SHA256SUMS"; sha256sum < "$0")
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  echo "unpack-deps: $prefix is up to date"
  exit 0
fi
command -v dpkg > /dev/null || { echo "unpack-deps: needs dpkg (any Debian or Ubuntu has it)" >&2; exit 1; }
(cd "$debs" && sha256sum --quiet -c SHA256SUMS) || { echo "unpack-deps: $debs: a .deb is damaged or missing" >&2; exit 1; }
rm -rf "${prefix:?}"/{usr,etc,lib,configure-only} "$stamp" "$prefix/env.sh"
packages=("$debs"/*.deb)
for deb in "${packages[@]}"; do dpkg -x "$deb" "$prefix"; done

arch=usr/lib/x86_64-linux-gnu
# The links the packages' postinst scripts make with update-alternatives.
ln -sfn mpirun.openmpi "$prefix/usr/bin/mpirun"
ln -sfn mpiexec.openmpi "$prefix/usr/bin/mpiexec"
ln -sfn mpicc.openmpi "$prefix/usr/bin/mpicc"
ln -sfn mpic++.openmpi "$prefix/usr/bin/mpicxx"
ln -sfn mpic++.openmpi "$prefix/usr/bin/mpic++"
ln -sfn openmpi/lib/libmpi.so "$prefix/$arch/libmpi.so"
ln -sfn openmpi/lib/libmpi_cxx.so "$prefix/$arch/libmpi++.so"
ln -sfn ../../lib/x86_64-linux-gnu/openmpi/include "$prefix/usr/include/x86_64-linux-gnu/mpi"
ln -sfn ../libpsm1/libpsm_infinipath.so.1.16 "$prefix/$arch/libpsm_infinipath.so.1"  # Open MPI's psm and ofi plugins
# libz.so: zlib1g (the runtime) is the machine's own, so the link points there.
system_libz=$(/sbin/ldconfig -p | awk '/libz\.so\.1 .*x86-64/ && !found { print $NF; found = 1 }')
[[ -n $system_libz ]] || { echo "unpack-deps: the machine has no libz.so.1 (zlib1g)" >&2; exit 1; }
ln -sfn "$system_libz" "$prefix/$arch/libz.so"
# libcurl only satisfies prometheus-cpp's find_dependency(CURL); vlmtrain never
# loads it. Moved off LD_LIBRARY_PATH: Debian's libcurl.so.4 would shadow the
# machine's (which CMake itself may load) and needs libraries Ubuntu renamed.
mkdir -p "$prefix/configure-only"
mv "$prefix/$arch"/libcurl.so.4* "$prefix/configure-only/"
ln -sfn "$prefix/configure-only/libcurl.so.4" "$prefix/$arch/libcurl.so"

# glog's CMake config finds its find modules (FindUnwind) by an absolute path,
# /usr/share/glog/cmake: made relative to where the config now lies.
glog_modules=$prefix/$arch/cmake/glog/glog-modules.cmake
# shellcheck disable=SC2016  # ${CMAKE_CURRENT_LIST_DIR} is for CMake
sed -i 's|"/usr/share/glog/cmake"|"${CMAKE_CURRENT_LIST_DIR}/../../../../share/glog/cmake"|' "$glog_modules"
grep -q 'CMAKE_CURRENT_LIST_DIR' "$glog_modules" || { echo "unpack-deps: could not relocate $glog_modules" >&2; exit 1; }

# usr/src/gtest leads to GoogleTest's sources, deliberately not fetched.
dangling=$(find "$prefix/usr" -xtype l ! -path '*/share/doc/*' ! -path '*/share/man/*' ! -path '*/usr/src/*' || true)
[[ -z $dangling ]] || { echo "unpack-deps: links that lead nowhere:" >&2; echo "$dangling" >&2; exit 1; }

cat > "$prefix/env.sh" <<ENV
# Written by scripts/gpu/unpack-deps.sh: source it to use the prefix.
export VLM_DEPS_PREFIX=$prefix
export PATH=$prefix/usr/bin:\$PATH
export LD_LIBRARY_PATH=$prefix/$arch/openmpi/lib:$prefix/$arch\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export CMAKE_PREFIX_PATH=$prefix/usr\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}
# Open MPI and PMIx were built for /usr; these move them (Open MPI's bin, lib,
# help files and wrapper data; PMIx's plugins and help files). Debian's defaults live in
# /etc/openmpi, which relocation does not move: named here.
export OPAL_PREFIX=$prefix/usr
# Debian's PMIx was configured with absolute lib and share dirs: PMIX_PREFIX alone moves neither.
export PMIX_PREFIX=$prefix/$arch/pmix2 PMIX_LIBDIR=$prefix/$arch/pmix2/lib PMIX_DATAROOTDIR=$prefix/$arch/pmix2/share
export OMPI_MCA_mca_base_param_files=$prefix/etc/openmpi/openmpi-mca-params.conf
# For cmake: FindMPI and FindProtobuf would take another MPI or protoc on PATH
# (an NGC image's HPC-X, say) as readily as these.
VLM_DEPS_CMAKE_ARGS=(-DMPI_CXX_COMPILER=$prefix/usr/bin/mpicxx.openmpi -DMPIEXEC_EXECUTABLE=$prefix/usr/bin/mpirun.openmpi
                     -DProtobuf_PROTOC_EXECUTABLE=$prefix/usr/bin/protoc)
ENV
echo "$want" > "$stamp"
echo "unpack-deps: ${#packages[@]} packages in $prefix; source $prefix/env.sh"
