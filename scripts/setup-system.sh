#!/usr/bin/env bash
# Prepares a Debian 12 host for authwire's kernel inspector and tests. Idempotent; root only.
# What and why: ../README.md ("Requirements"); `authwire doctor` checks the same things at run time.
set -euo pipefail

APT_PACKAGES=(
  python3-venv python3-bpfcc bpfcc-tools linux-headers-amd64   # bcc + headers it compiles against
  gcc python3-dev                                              # builds authwire's native pass (_eventwire.c)
  iproute2 nftables wrk                                        # netns/veth/tc, loss injection, load
  nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson luajit2  # Lua plugin tests
  # the real APISIX 3.18 runtime of ../shared/apisix (its lib/debian-packages.txt) and Kong's real Lua
  libnginx-mod-http-ndk libnginx-mod-http-headers-more-filter lua-penlight lua-filesystem lua-yaml
  lua-argparse lua-posix lua-rex-pcre2 lua-socket lua-sec lua-lpeg ca-certificates curl
  prometheus chromium chromium-driver                          # real Prometheus scrape, web view tests
)

if [ "$(id -u)" != 0 ]; then
  echo "setup-system: not root; skipping apt, mounts and header links (the kernel inspector needs root)." >&2
  exit 0
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-system: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc looks for headers under /lib/modules/$(uname -r)/{build,source}. Where the running kernel ships none
# (our VMs: 6.18 kernel, Debian's 6.1 headers), point those at Debian's linux-headers-amd64. The BPF code
# never dereferences kernel structs, so a version mismatch is harmless for it.
mod="/lib/modules/$(uname -r)"
if [ ! -e "$mod/build/include" ]; then
  arch_hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1 || true)
  common_hdr=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$arch_hdr" ] && [ -n "$common_hdr" ]; then
    mkdir -p "$mod"
    ln -sfn "$arch_hdr" "$mod/build"
    ln -sfn "$common_hdr" "$mod/source"
    echo "setup-system: linked $mod/build -> $arch_hdr, $mod/source -> $common_hdr"
  fi
fi

mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
exit 0
