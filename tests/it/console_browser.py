"""The web console in a real browser (Debian's chromium, driven by selenium): a user signs up,
verifies the address through the link in the mailed message, signs in, sees the credits,
uploads an image and sees its preview, sees the estimate, requests a video, watches its
progress, plays it in the gallery, cancels another, creates and revokes an API key, resets
the password through the mailed link; an administrator grants credits and reads the video's
audit timeline. Every page is checked for unlabelled controls and for scripts the Content
Security Policy refused; the main flow is typed through the keyboard.

Run by tests/it/console.rs: argv is a JSON object (see `main`). Prints one JSON line with
what it saw; exits non-zero (after a screenshot of the failure) when anything is off.
"""

import email
import email.policy
import json
import pathlib
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    ElementNotInteractableException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another horse, another staple"


class Run:
    def __init__(self, args):
        self.base = args["base"]
        self.mailbox = pathlib.Path(args["mailbox"])
        self.artifacts = pathlib.Path(args["artifacts"])
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.admin = (args["admin_email"], args["admin_password"])
        self.image = args["image"]
        self.email = args["email"]
        options = webdriver.ChromeOptions()
        options.binary_location = args["chromium"]
        for flag in (
            "--headless=new",
            "--no-sandbox",  # root in CI containers
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(args["chromedriver"]), options=options)
        self.driver.set_page_load_timeout(30)
        self.shots = []
        self.seen = {}

    # --- helpers -------------------------------------------------------------------------

    def wait(self, condition, timeout=20, message=""):
        # The gallery redraws a card at each of its video's events: a lookup may meet the
        # card it found a moment ago gone, or a button in the middle of being redrawn (not
        # interactable yet), and simply looks again.
        return WebDriverWait(
            self.driver, timeout, poll_frequency=0.1,
            ignored_exceptions=[StaleElementReferenceException, ElementNotInteractableException],
        ).until(condition, message)

    def press(self, css, key=Keys.ENTER):
        """Presses `key` on the element at `css`, finding it again if it was redrawn."""
        def pressed(d):
            d.find_element(By.CSS_SELECTOR, css).send_keys(key)
            return True
        self.wait(pressed, message=f"press {css}")

    def open(self, path):
        self.driver.get(self.base + path)
        self.wait(lambda d: d.execute_script("return document.querySelector('h1') !== null"),
                  message=f"a page at {path}")

    def heading(self, text):
        self.wait(
            lambda d: d.execute_script("return document.querySelector('h1')?.textContent") == text,
            message=f"the page titled {text!r}",
        )

    def shot(self, name):
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path.name)

    def keys(self, *keys):
        """Types into whatever has the focus, as a keyboard user does."""
        self.driver.switch_to.active_element.send_keys(*keys)

    def focused(self):
        return self.driver.switch_to.active_element

    def check_page(self, name):
        """Every control has an accessible label, every button a name, and no script or
        style was refused by the CSP or failed."""
        unlabelled = self.driver.execute_script(
            """
            const named = (el) => (el.labels && el.labels.length && [...el.labels].some(l => l.textContent.trim()))
              || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
            const bad = [];
            for (const el of document.querySelectorAll('input, select, textarea')) {
              if (el.type === 'hidden') continue;
              if (!named(el)) bad.push(el.outerHTML.slice(0, 120));
            }
            for (const el of document.querySelectorAll('button')) {
              if (!el.textContent.trim() && !el.getAttribute('aria-label')) bad.push(el.outerHTML.slice(0, 120));
            }
            for (const el of document.querySelectorAll('img, video')) {
              if (el.tagName === 'IMG' && !el.hasAttribute('alt')) bad.push(el.outerHTML.slice(0, 120));
              if (el.tagName === 'VIDEO' && !el.getAttribute('aria-label')) bad.push(el.outerHTML.slice(0, 120));
            }
            return bad;
            """
        )
        assert not unlabelled, f"{name}: controls without a label or name: {unlabelled}"
        self.check_log(name)

    def check_log(self, name):
        problems = [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if "Content Security Policy" in entry["message"]
            or "Uncaught" in entry["message"]
            or "Failed to load module" in entry["message"]
        ]
        assert not problems, f"{name}: the browser reported {problems}"

    def mail(self, subject_part, after=0.0, timeout=20):
        """The newest mail to the user whose subject contains `subject_part`, written after
        `after`, as text (quoted-printable decoded)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = []
            for path in self.mailbox.glob("*.eml"):
                if path.stat().st_mtime < after:
                    continue
                with path.open("rb") as f:
                    message = email.message_from_binary_file(f, policy=email.policy.default)
                if self.email in str(message["To"]) and subject_part in str(message["Subject"]):
                    found.append((path.stat().st_mtime, message.get_content()))
            if found:
                return sorted(found)[-1][1]
            time.sleep(0.2)
        raise AssertionError(f"no mail about {subject_part!r} to {self.email}")

    def api(self, method, path, token=None, body=None):
        request = urllib.request.Request(self.base + path, method=method)
        if token:
            request.add_header("authorization", f"Bearer {token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, data=data, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def figure(self, name):
        text = self.driver.find_element(By.CSS_SELECTOR, f"[data-figure={name}]").text
        return int(re.sub(r"[^0-9-]", "", text.split(" ")[0]))

    def sign_in(self, address, password):
        """Signs in by keyboard only: the email field has the focus when the page opens."""
        self.open("/console/sign-in")
        self.heading("Sign in")
        self.check_page("sign-in")
        assert self.focused().get_attribute("name") == "email", "the email field has the focus"
        self.keys(address, Keys.TAB)
        self.keys(password, Keys.ENTER)
        self.heading("Your videos")

    # --- the run -------------------------------------------------------------------------

    def sign_up_and_verify(self):
        self.open("/console/sign-up")
        self.heading("Sign up")
        self.check_page("sign-up")
        started = time.time() - 1
        # Email, password, repeat, Enter: the keyboard alone.
        self.keys(self.email, Keys.TAB)
        self.keys(PASSWORD, Keys.TAB)
        self.keys(PASSWORD, Keys.ENTER)
        self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "Account created"))
        self.shot("signed-up")
        body = self.mail("Confirm", after=started)
        links = re.findall(r"https?://\S+", body)
        verify = [l for l in links if "/console/verify-email?token=" in l]
        assert verify, f"the verification mail links to the console: {body}"
        assert verify[0].startswith(self.base), verify[0]
        self.driver.get(verify[0])
        self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "is verified"))
        assert "token" not in self.driver.current_url, "the token is taken out of the address bar"
        self.check_page("verify-email")
        self.shot("email-verified")
        # The link again: the token is spent.
        self.driver.get(verify[0])
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]")))

    def credits(self, expected=None):
        """The available credits and the ledger's text; with `expected`, opens the page
        again until the settlement (a moment after the video's end) shows it."""
        deadline = time.time() + 20
        while True:
            available, ledger = self.credits_page()
            if expected is None or available == expected or time.time() > deadline:
                return available, ledger
            time.sleep(0.5)

    def credits_page(self):
        self.open("/console/credits")
        self.heading("Credits")
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-figure=available]")))
        self.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr td")) > 1)
        self.check_page("credits")
        return self.figure("available"), self.driver.find_element(By.TAG_NAME, "tbody").text

    def request_video(self, catalog):
        self.driver.find_element(By.LINK_TEXT, "New video").click()
        self.heading("New video")
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, "#estimate[data-cost]")))
        self.check_page("create")
        Select(self.driver.find_element(By.NAME, "provider")).select_by_value("simulator")
        model = next(m for m in catalog if m["default"]) if catalog else None
        durations = [int(o.get_attribute("value")) for o in Select(self.driver.find_element(By.NAME, "duration_seconds")).options]
        resolutions = [o.get_attribute("value") for o in Select(self.driver.find_element(By.NAME, "resolution")).options]
        assert durations == model["durations"], f"offered durations {durations} are the model's {model['durations']}"
        assert resolutions == model["resolutions"], f"offered resolutions {resolutions}"
        # The prompt has the focus; the rest by keyboard where a keyboard user would type.
        assert self.focused().get_attribute("name") == "prompt"
        self.keys("a paper boat on a rainy street")
        Select(self.driver.find_element(By.NAME, "duration_seconds")).select_by_value("3")
        Select(self.driver.find_element(By.NAME, "resolution")).select_by_value("480p")
        self.driver.find_element(By.NAME, "image").send_keys(self.image)
        self.wait(lambda d: d.execute_script(
            "const i = document.getElementById('image-preview'); return i && i.complete && i.naturalWidth > 0"),
            message="the image preview shows")
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, ".preview[data-image-id]")), message="the upload finished")
        price = model["resolution_prices"].get("480p", model["credits_per_second"])
        expected = 3 * price
        self.wait(lambda d: d.find_element(By.ID, "estimate").get_attribute("data-cost") == str(expected),
                  message=f"the estimate shows {expected}")
        estimate_text = self.driver.find_element(By.ID, "estimate").text
        assert f"{expected} credit" in estimate_text, estimate_text
        self.driver.execute_script("document.getElementById('estimate').scrollIntoView({block: 'end'})")
        self.shot("request-form-with-preview-and-estimate")
        submit = self.driver.find_element(By.CSS_SELECTOR, "#request-form button[type=submit]")
        submit.send_keys(Keys.ENTER)  # a keyboard user's Enter on the focused button
        self.heading("Your videos")
        video_id = urllib.parse.parse_qs(urllib.parse.urlparse(self.driver.current_url).query)["new"][0]
        self.wait(lambda d: d.find_element(By.CSS_SELECTOR, f"article[data-video-id='{video_id}']"))
        self.seen["video_id"] = video_id
        return video_id, expected

    def watch_and_play(self, video_id):
        card = f"article[data-video-id='{video_id}']"
        statuses, progress = [], []
        deadline = time.time() + 60
        while time.time() < deadline:
            # One read of the card as it is now (the page redraws it at every event).
            now = self.driver.execute_script(
                """
                const card = document.querySelector(arguments[0]);
                if (!card) return null;
                const bar = card.querySelector('progress');
                return {status: card.dataset.status, progress: bar ? Number(bar.value) : null};
                """,
                card,
            )
            if now:
                if not statuses or statuses[-1] != now["status"]:
                    statuses.append(now["status"])
                    if now["status"] == "running":
                        self.shot("progress")
                if now["progress"] is not None and (not progress or progress[-1] != now["progress"]):
                    progress.append(now["progress"])
                if now["status"] in ("completed", "failed", "cancelled"):
                    break
            time.sleep(0.05)
        assert statuses[-1] == "completed", f"the video completed: {statuses}"
        assert len(statuses) >= 2, f"live states were shown, not only the end: {statuses}"
        assert progress == sorted(progress), f"progress never goes back: {progress}"
        self.seen["statuses"], self.seen["progress"] = statuses, progress
        video = self.driver.find_element(By.CSS_SELECTOR, f"{card} video")
        poster = video.get_attribute("poster")
        assert poster, "the finished video has a poster"
        loaded = self.driver.execute_async_script(
            """
            const [url, done] = arguments;
            const img = new Image();
            img.onload = () => done(img.naturalWidth);
            img.onerror = () => done(0);
            img.src = url;
            """,
            poster,
        )
        assert loaded > 0, "the poster is an image the page can load"
        self.check_page("videos")
        self.shot("gallery-with-poster")
        # Play it with the keyboard: focus the player, press k? Chrome's controls take Space.
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", video)
        self.keys(Keys.SPACE)
        try:
            self.wait(lambda d: d.execute_script("return arguments[0].currentTime > 0.5", video), timeout=10)
        except TimeoutException:
            # Space went to the page, not the player: start it as the play button would.
            self.driver.execute_script("arguments[0].play()", video)
            self.wait(lambda d: d.execute_script("return arguments[0].currentTime > 0.5", video), timeout=15,
                      message="the video plays")
        state = self.driver.execute_script(
            "const v = arguments[0]; return {t: v.currentTime, ready: v.readyState, w: v.videoWidth, h: v.videoHeight, d: v.duration, err: v.error && v.error.code}",
            video,
        )
        assert state["ready"] >= 2 and state["w"] > 0 and state["err"] is None, state
        self.seen["playback"] = state
        self.shot("video-playing")

    def cancel_one(self):
        self.driver.find_element(By.LINK_TEXT, "New video").click()
        self.heading("New video")
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, "#estimate[data-cost]")))
        self.keys("a slow sunrise over a harbour")
        Select(self.driver.find_element(By.NAME, "duration_seconds")).select_by_value("20")
        self.wait(lambda d: d.find_element(By.ID, "estimate").get_attribute("data-cost") == "20")
        self.driver.find_element(By.CSS_SELECTOR, "#request-form button[type=submit]").send_keys(Keys.ENTER)
        self.heading("Your videos")
        cancelled_id = urllib.parse.parse_qs(urllib.parse.urlparse(self.driver.current_url).query)["new"][0]
        assert cancelled_id != self.seen["video_id"]
        card = f"article[data-video-id='{cancelled_id}']"
        self.press(f"{card} button.danger")
        self.wait(lambda d: d.find_element(By.CSS_SELECTOR, card).get_attribute("data-status") == "cancelled",
                  timeout=30, message="the video is cancelled")
        text = self.wait(lambda d: d.find_element(By.CSS_SELECTOR, card).text)
        self.seen["cancelled_id"] = cancelled_id
        self.seen["cancelled_text"] = text
        self.shot("cancelled")

    def api_key(self):
        self.driver.find_element(By.LINK_TEXT, "API keys").click()
        self.heading("API keys")
        self.check_page("keys")
        self.driver.find_element(By.NAME, "name").click()
        self.keys("render farm", Keys.ENTER)
        secret = self.wait(lambda d: d.find_element(By.ID, "new-key-secret")).get_attribute("value")
        assert secret.startswith("fg_"), secret
        status, _ = self.api("GET", "/v1/credits", token=secret)
        assert status == 200, f"the new key works: {status}"
        self.shot("api-key-created")
        # Shown once: the page opened again does not have it.
        self.open("/console/keys")
        self.heading("API keys")
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-key-id]"))
        assert secret not in self.driver.page_source
        self.press("tr[data-key-id] button.danger")
        self.wait(EC.alert_is_present()).accept()
        self.wait(lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, "tr[data-key-id]").text)
        status, problem = self.api("GET", "/v1/credits", token=secret)
        assert status == 401, f"the revoked key is refused: {status} {problem}"
        self.shot("api-key-revoked")

    def reset_password(self):
        self.driver.find_element(By.CSS_SELECTOR, "nav button.link").click()  # sign out
        self.heading("Sign in")
        self.driver.find_element(By.LINK_TEXT, "Forgot your password?").click()
        self.heading("Reset your password")
        self.check_page("forgot-password")
        started = time.time() - 1
        self.keys(self.email, Keys.ENTER)
        self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "reset link"))
        body = self.mail("Reset your password", after=started)
        link = next((l for l in re.findall(r"https?://\S+", body) if "/console/reset-password?token=" in l), None)
        assert link and link.startswith(self.base), f"the reset mail links to the console: {body}"
        self.driver.get(link)
        self.heading("Choose a new password")
        assert "token" not in self.driver.current_url
        self.check_page("reset-password")
        self.keys(NEW_PASSWORD, Keys.TAB)
        self.keys(NEW_PASSWORD, Keys.ENTER)
        self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "password is changed"))
        self.shot("password-reset")
        self.sign_in(self.email, NEW_PASSWORD)

    def admin_run(self, video_id):
        self.driver.find_element(By.CSS_SELECTOR, "nav button.link").click()
        self.heading("Sign in")
        self.sign_in(*self.admin)
        self.driver.find_element(By.LINK_TEXT, "Admin").click()
        self.heading("Administration")
        self.wait(EC.presence_of_element_located((By.ID, "grant-form")))
        self.check_page("admin")
        Select(self.driver.find_element(By.NAME, "user")).select_by_visible_text(self.email)
        self.driver.find_element(By.NAME, "amount").send_keys("50", Keys.TAB)
        self.keys("support goodwill", Keys.ENTER)
        self.wait(EC.text_to_be_present_in_element((By.ID, "grant-result"), "Granted 50 credits"))
        self.seen["grant"] = self.driver.find_element(By.ID, "grant-result").text
        self.driver.find_element(By.NAME, "video").send_keys(video_id, Keys.ENTER)
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline li"))
        types = [li.get_attribute("data-event-type") for li in self.driver.find_elements(By.CSS_SELECTOR, "#timeline li")]
        assert types[0] == "VideoRequested", types
        assert any("Completed" in t for t in types), types
        self.seen["timeline"] = types
        self.check_page("admin timeline")
        self.driver.execute_script("document.getElementById('timeline').scrollIntoView({block: 'start'})")
        self.shot("admin-timeline")

    def old_links_and_docs(self):
        self.driver.get(self.base + "/verify-email?token=00000000-0000-0000-0000-000000000000.nope")
        self.heading("Verify your email address")
        assert urllib.parse.urlparse(self.driver.current_url).path == "/console/verify-email"
        self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]")))
        self.driver.get(self.base + "/docs")
        self.wait(lambda d: d.execute_script(
            "const r = document.querySelector('rapi-doc'); return r && r.shadowRoot && r.shadowRoot.textContent.includes('Framegate API')"),
            timeout=30, message="the API reference renders")
        foreign = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin) && !n.startsWith('data:'))")
        assert not foreign, f"/docs loads nothing from elsewhere: {foreign}"
        self.check_log("docs")
        self.shot("api-docs")

    def run(self):
        catalog = next(p for p in self.api("GET", "/v1/providers")[1] if p["provider"] == "simulator")["models"]
        self.sign_up_and_verify()
        self.sign_in(self.email, PASSWORD)
        self.shot("signed-in")
        available, ledger = self.credits()
        assert available > 0 and "Granted" in ledger, (available, ledger)
        self.shot("credits")
        video_id, cost = self.request_video(catalog)
        self.watch_and_play(video_id)
        after, ledger = self.credits(expected=available - cost)
        assert after == available - cost, f"charged the estimate: {available} - {cost} != {after}"
        assert "Charged for a video" in ledger, ledger
        self.cancel_one()
        back, _ = self.credits(expected=after)
        assert back == after, f"a cancelled video costs nothing: {after} then {back}"
        self.api_key()
        self.reset_password()
        self.admin_run(video_id)
        self.old_links_and_docs()
        self.seen["available_after_video"] = after
        self.seen["screenshots"] = self.shots


def main():
    args = json.loads(sys.argv[1])
    run = Run(args)
    try:
        run.run()
        print(json.dumps(run.seen))
    except BaseException:
        try:
            run.driver.save_screenshot(str(run.artifacts / "failure.png"))
            (run.artifacts / "failure.html").write_text(run.driver.page_source)
            print(f"failed at {run.driver.current_url}; logs: {run.driver.get_log('browser')}", file=sys.stderr)
        finally:
            raise
    finally:
        run.driver.quit()


if __name__ == "__main__":
    main()
