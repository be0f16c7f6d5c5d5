#!/bin/sh
# Writes the workspace's dependency skeleton to DEST: the root manifest and lock
# file, every crate's Cargo.toml with empty targets, and the vendored crates
# whole (they are dependencies, patched in by the root manifest). Building the
# skeleton compiles every dependency and none of our code, so the image build
# keeps that layer until a manifest, the lock file or vendor/ changes.
#
#   deploy/docker/cargo-skeleton.sh SRC DEST
set -eu
src=$1
dest=$2
mkdir -p "$dest"
cp "$src/Cargo.toml" "$src/Cargo.lock" "$dest/"
cp -R "$src/vendor" "$dest/vendor"
for manifest in "$src"/crates/*/Cargo.toml; do
  rel=crates/$(basename "$(dirname "$manifest")")
  mkdir -p "$dest/$rel/src"
  cp "$manifest" "$dest/$rel/Cargo.toml"
  : >"$dest/$rel/src/lib.rs"
  # Targets the manifest names by path ([[bin]] path = "src/main.rs") must exist.
  sed -n 's/^path *= *"\(.*\)"/\1/p' "$manifest" | while read -r target; do
    [ "$target" = src/lib.rs ] && continue
    mkdir -p "$(dirname "$dest/$rel/$target")"
    echo 'fn main() {}' >"$dest/$rel/$target"
  done
done
