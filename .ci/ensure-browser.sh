#!/usr/bin/env bash
# Debian chromium for the Playwright console tests. Under CI=true (root) it is installed;
# locally the browser tests skip when it is missing.
set -uo pipefail
have_fonts() { fc-list 2>/dev/null | grep -qi "wenquanyi\|wqy"; }
if [ -x /usr/bin/chromium ] && have_fonts; then echo "browser: /usr/bin/chromium present"; exit 0; fi
if [ "$(id -u)" = "0" ]; then
  echo "browser: installing Debian chromium and CJK/emoji fonts"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei fonts-noto-color-emoji) >/dev/null 2>&1 || true
fi
if [ -x /usr/bin/chromium ]; then echo "browser: chromium installed"; exit 0; fi
if [ "${CI:-}" = "true" ]; then echo "browser: ERROR: chromium could not be installed" >&2; exit 1; fi
echo "browser: WARNING: no /usr/bin/chromium; browser tests will be skipped" >&2
