#!/bin/sh
# Headless Chromium for tests/test_app_browser.py (Debian package; Playwright drives it with
# executable_path=/usr/bin/chromium, so no Playwright browser download is needed). Run as root.
set -eu
apt-get update
apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
