#!/usr/bin/env bash
# Debian packages the project uses: chromium (browser tests, figure export), Liberation fonts
# (metric-compatible Helvetica/Arial and Times for exported figures), Fashion-MNIST and
# the emoji font (data sets). Installed when run as root with apt-get; otherwise we say what is
# missing and carry on (the app hides data sets whose files are missing).
set -u
pkgs=(chromium dataset-fashion-mnist fonts-noto-color-emoji fonts-liberation fontconfig)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || echo "warning: apt-get could not install ${missing[*]}; continuing without them"
else
  echo "note: missing Debian packages ${missing[*]} (run 'sudo apt-get install ${missing[*]}');" \
       "continuing: browser tests skip and those data sets are hidden"
fi
exit 0
