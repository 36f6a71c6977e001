#!/usr/bin/env bash
# Builds the Docker image the tests run: agora-test/busybox:latest.
#
# There is no image registry here, so the image is made with `docker import`
# from a root filesystem holding Debian's static busybox (its sh, sleep,
# httpd, nc, ... cover the tests). Idempotent: does nothing if the image
# exists, unless --force.
set -euo pipefail

IMAGE=agora-test/busybox:latest

if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  echo "installing busybox-static"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq busybox-static >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq busybox-static; }
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,tmp,etc,proc,sys,dev,var/www,root}
chmod 1777 "$root/tmp"
cp "$(dpkg -L busybox-static | grep -m1 '/bin/busybox$')" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
echo 'nogroup:x:65534:' >> "$root/etc/group"
echo 'agora test image' > "$root/var/www/index.html"

tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
  --change 'CMD ["/bin/sh"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
