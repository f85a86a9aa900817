#!/usr/bin/env python3
"""Drives headless Chromium for tests/web_page.rs, one command per line on
stdin, one answer per line on stdout ("ok ..." or "fail ...").

    open URL                      load the page once
    wait_status CLASS SECS        until #status has class CLASS
    wait_mac MAC present|absent SECS
                                  until the MAC table row (and the topology
                                  host) for MAC is there / gone
    same_page                     the page was not reloaded since `open`
    quit

Exit status 2 when Chromium or Selenium cannot start (the test says so)."""

import os
import shutil
import sys
import tempfile
import time


def answer(text):
    print(text, flush=True)


def start_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="tapswitch-chromium-")
    # As root, Chromium needs --no-sandbox; the rest keeps it off the network
    # and quick to start.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--user-data-dir=" + profile,
    ):
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    service = Service(executable_path=driver_path)
    return webdriver.Chrome(service=service, options=options), profile


def wait(secs, check):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def main():
    try:
        browser, profile = start_browser()
    except Exception as err:  # noqa: BLE001 - any failure means "cannot test"
        first = str(err).splitlines()[0] if str(err) else repr(err)
        answer("fail cannot start chromium: " + first)
        sys.exit(2)
    answer("ok browser")
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd = words[0]
            if cmd == "open":
                browser.get(words[1])
                browser.execute_script("window.tapswitchTestMark = 'not reloaded';")
                answer("ok opened")
            elif cmd == "wait_status":
                want, secs = words[1], float(words[2])
                ok = wait(secs, lambda: want in (browser.execute_script(
                    "return document.getElementById('status').className;") or ""))
                status = browser.execute_script(
                    "const s = document.getElementById('status'); return s.className + ': ' + s.textContent;")
                answer(("ok " if ok else "fail ") + status)
            elif cmd == "wait_mac":
                mac, state, secs = words[1], words[2], float(words[3])
                script = (
                    "return [document.querySelector('tr.fdb-row[data-mac=\"%s\"]') !== null,"
                    " document.querySelector('#topology g.host[data-mac=\"%s\"]') !== null];" % (mac, mac))
                want = state == "present"
                ok = wait(secs, lambda: browser.execute_script(script) == [want, want])
                answer(("ok " if ok else "fail ") + "%s %s (row, host): %s" % (
                    mac, state, browser.execute_script(script)))
            elif cmd == "same_page":
                mark = browser.execute_script("return window.tapswitchTestMark;")
                answer(("ok " if mark == "not reloaded" else "fail reloaded ") + str(mark))
            elif cmd == "quit":
                answer("ok bye")
                break
            else:
                answer("fail unknown command " + cmd)
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
