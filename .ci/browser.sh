# A real browser for the HTML report tests (tests/converters/validation/test_html_reports.py): Debian's chromium,
# installed with apt-get when missing and we are root. Sourced by .ci/run; never fails CI
# (without a browser those tests skip, saying why).
_edgeport_browser() {
  if command -v chromium >/dev/null 2>&1; then
    echo "browser: chromium present"
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser: chromium missing and cannot be installed here (not root or no apt-get); report tests will skip"
    return 0
  fi
  echo "browser: installing chromium with apt-get"
  if ! { apt-get update -q >/tmp/edgeport-apt-browser.log 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
           >>/tmp/edgeport-apt-browser.log 2>&1; }; then
    echo "browser: apt-get failed ($(tail -n 1 /tmp/edgeport-apt-browser.log)); report tests will skip"
  fi
}
_edgeport_browser || true
