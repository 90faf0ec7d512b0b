"""Drives the dashboard of a running `twoway ca serve` in Debian's Chromium through
Playwright, as an administrator, an auditor, a certificate that is neither, and another
site. Reads its settings as JSON from argv[1]; prints one JSON object of what it saw on
stdout (the Rust test judges it); saves a screenshot of each page into `shots`.

Every wait is bounded by Playwright's timeouts (10 s per action, 20 s per navigation).
"""

import json
import re
import sys

from playwright.sync_api import sync_playwright

cfg = json.loads(sys.argv[1])
BASE = cfg["base"]
SHOTS = cfg["shots"]
seen = {"dialogs": [], "steps": []}


def step(name):
    seen["steps"].append(name)
    print(f"step: {name}", file=sys.stderr, flush=True)


def shot(page, name, full=True):
    page.screenshot(path=f"{SHOTS}/{name}.png", full_page=full)


def context(browser, who, **kw):
    certs = []
    if who:
        certs = [{"origin": BASE, "certPath": cfg[who]["cert"], "keyPath": cfg[who]["key"]}]
    ctx = browser.new_context(
        client_certificates=certs,
        ignore_https_errors=True,
        viewport=kw.pop("viewport", {"width": 1280, "height": 900}),
        **kw,
    )
    ctx.set_default_timeout(10_000)
    ctx.set_default_navigation_timeout(20_000)
    return ctx


def watch(page):
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))


def number(page, selector):
    return int(page.locator(selector).locator(".n").inner_text().strip())


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=cfg["chromium"], args=["--no-sandbox"])
    admin = context(browser, "admin")
    page = admin.new_page()
    watch(page)

    step("overview")
    resp = page.goto(f"{BASE}/ui/")
    seen["overview_status"] = resp.status
    seen["csp"] = resp.headers.get("content-security-policy", "")
    seen["nosniff"] = resp.headers.get("x-content-type-options", "")
    seen["overview"] = {
        "total": number(page, "#count-total"),
        "active": number(page, "#count-active"),
        "expired": number(page, "#count-expired"),
        "revoked": number(page, "#count-revoked"),
        "expiring_30d": number(page, "#expiring-3"),
    }
    seen["viewer"] = page.locator("#viewer").inner_text()
    seen["charts"] = page.locator("svg.chart").count()
    shot(page, "overview")

    step("inventory filter through the form")
    page.goto(f"{BASE}/ui/certificates")
    page.fill("#f-owner", cfg["owner"])
    page.select_option("#f-per", "25")
    page.select_option("#f-sort", "oldest")
    page.click("#f-apply")
    page.wait_for_load_state()
    seen["filtered_url"] = page.url
    seen["page1_rows"] = page.locator("#certs tbody tr").count()
    seen["page1_summary"] = page.locator("#summary").inner_text()
    shot(page, "inventory")
    page.click("#next")
    page.wait_for_load_state()
    seen["page2_url"] = page.url
    seen["page2_rows"] = page.locator("#certs tbody tr").count()
    seen["page2_summary"] = page.locator("#summary").inner_text()

    step("open a certificate and revoke it through the confirmation")
    row = page.locator("#certs tbody tr").first
    seen["victim_sans"] = row.locator("td").nth(2).inner_text()
    row.locator("a").first.click()
    page.wait_for_load_state()
    seen["cert_status_before"] = page.locator("#cert-status").inner_text()
    seen["cert_has_pem"] = "BEGIN CERTIFICATE" in page.locator("#pem").text_content()
    shot(page, "certificate")
    page.select_option("#reason", "key-compromise")
    page.click("#revoke")
    page.wait_for_load_state()
    seen["confirm_reason"] = page.locator("#confirm-reason").inner_text()
    shot(page, "revoke-confirm")
    page.click("#confirm-revoke")
    page.wait_for_load_state()
    seen["cert_status_after"] = page.locator("#cert-status").inner_text()
    seen["notice"] = page.locator("#notice").inner_text()
    fields = page.locator("#fields").inner_text()
    m = re.search(r"Serial\s+([0-9a-f]+)", fields)
    seen["victim_serial"] = m.group(1) if m else ""
    page.click("#back")
    page.wait_for_load_state()
    seen["back_url"] = page.url
    statuses = {}
    for r in page.locator("#certs tbody tr").all():
        statuses[r.locator("td").nth(2).inner_text()] = r.locator("td").nth(5).inner_text()
    seen["list_status_after"] = statuses.get(seen["victim_sans"], "")

    step("bad filter, page past the end")
    resp = page.goto(f"{BASE}/ui/certificates?expiring=soon")
    seen["bad_filter"] = [resp.status, page.locator("#filter-error").inner_text()]
    resp = page.goto(f"{BASE}/ui/certificates?owner={cfg['owner']}&per=25&page=99")
    seen["past_end"] = [resp.status, page.locator("#filter-error").inner_text()]
    resp = admin.request.get(f"{BASE}/ui/certificates.csv?owner={cfg['owner']}")
    seen["csv_lines"] = len(resp.text().strip().splitlines())

    step("audit")
    page.goto(f"{BASE}/ui/audit?action=cert.revoke")
    seen["audit_rows"] = [
        [c.inner_text() for c in r.locator("td").all()[:5]]
        for r in page.locator("#audit tbody tr").all()
    ]
    page.click("#verify")
    page.wait_for_load_state()
    seen["chain"] = page.locator("#chain").inner_text()
    shot(page, "audit")

    step("owners")
    page.goto(f"{BASE}/ui/owners")
    seen["owners"] = [
        [c.inner_text() for c in r.locator("td").all()]
        for r in page.locator("#owners tbody tr").all()
    ]
    shot(page, "owners")

    step("token")
    page.goto(f"{BASE}/ui/tokens")
    page.fill("#t-sans", cfg["token_san"])
    page.select_option("#t-profile", "server")
    page.fill("#t-ttl", "10m")
    page.fill("#t-owner", "team-ui")
    page.click("#t-create")
    page.wait_for_load_state()
    seen["token"] = page.locator("#token-secret").input_value()
    shot(page, "tokens")
    page.goto(f"{BASE}/ui/tokens")
    seen["token_shown_again"] = page.locator("#token-secret").count()
    seen["token_rows"] = page.locator("#tokens tbody tr").count()
    page.fill("#t-sans", "IP:999.0.0.1")
    page.fill("#t-ttl", "10m")
    page.click("#t-create")
    page.wait_for_load_state()
    seen["token_error"] = page.locator("#token-error").inner_text()

    step("stored XSS renders as text")
    page.goto(f"{BASE}/ui/certificates?owner={cfg['xss_owner_q']}")
    seen["xss_rows"] = page.locator("#certs tbody tr").count()
    seen["xss_text"] = page.locator("#certs").inner_text()
    seen["xss_script_elements"] = page.locator("main script").count()
    page.locator("#certs tbody tr a").first.click()
    page.wait_for_load_state()
    seen["xss_cert_text"] = page.locator("#fields").inner_text()
    seen["xss_heading"] = page.locator("#cert-name").inner_text()
    shot(page, "xss-certificate")

    step("forged requests")
    csrf = None
    page.goto(f"{BASE}/ui/tokens")
    csrf = page.locator("#token-form input[name=csrf]").input_value()
    form = {"sans": "DNS:forged.test", "profile": "server", "ttl": "10m"}
    r = admin.request.post(f"{BASE}/ui/tokens", form=form, headers={"Origin": BASE})
    seen["post_no_csrf"] = [r.status, r.text()]
    r = admin.request.post(
        f"{BASE}/ui/tokens", form={**form, "csrf": "00" * 32}, headers={"Origin": BASE}
    )
    seen["post_bad_csrf"] = [r.status, r.text()]
    r = admin.request.post(
        f"{BASE}/ui/tokens", form={**form, "csrf": csrf}, headers={"Origin": "https://evil.test"}
    )
    seen["post_wrong_origin"] = [r.status, r.text()]
    # A real cross-site form: a page of another site posts a form to the dashboard.
    evil = "https://evil.test/"
    admin.route(
        evil,
        lambda route: route.fulfill(
            status=200,
            content_type="text/html",
            body=(
                f'<form id="f" method="post" action="{BASE}/ui/tokens">'
                f'<input name="csrf" value="{csrf}"><input name="sans" value="DNS:forged.test">'
                '<input name="profile" value="server"><input name="ttl" value="10m">'
                '<button id="go">go</button></form>'
            ),
        ),
    )
    page.goto(evil)
    with page.expect_navigation() as nav:
        page.click("#go")
    resp = nav.value
    seen["cross_site_form"] = [resp.status if resp else 0, page.locator("body").inner_text()]

    step("auditor")
    aud = context(browser, "auditor")
    apage = aud.new_page()
    watch(apage)
    apage.goto(f"{BASE}/ui/certificates?owner={cfg['owner']}&status=active")
    seen["auditor_rows"] = apage.locator("#certs tbody tr").count()
    apage.locator("#certs tbody tr a").first.click()
    apage.wait_for_load_state()
    seen["auditor_revoke_buttons"] = apage.locator("#revoke").count()
    seen["auditor_viewer"] = apage.locator("#viewer").inner_text()
    target = apage.url.split("/ui/certificates/")[1].split("?")[0]
    shot(apage, "auditor-certificate")
    r = aud.request.post(
        f"{BASE}/ui/certificates/{target}/revoke",
        form={"csrf": csrf, "reason": "key-compromise", "confirm": "yes"},
        headers={"Origin": BASE},
    )
    seen["auditor_post"] = [r.status, r.text()]
    r = apage.goto(f"{BASE}/ui/certificates/{target}/revoke?reason=unspecified")
    seen["auditor_confirm_page"] = r.status
    apage.goto(f"{BASE}/ui/tokens")
    seen["auditor_token_forms"] = apage.locator("#token-form").count()

    step("a certificate that is neither")
    nob = context(browser, "nobody")
    npage = nob.new_page()
    r = npage.goto(f"{BASE}/ui/")
    seen["nobody"] = [r.status, npage.locator("#message").inner_text()]
    none = context(browser, None)
    r = none.new_page().goto(f"{BASE}/ui/")
    seen["no_certificate"] = r.status

    step("phone, JavaScript off")
    phone = context(
        browser, "admin", viewport={"width": 390, "height": 844}, java_script_enabled=False
    )
    ppage = phone.new_page()
    r = ppage.goto(f"{BASE}/ui/")
    seen["phone_status"] = r.status
    seen["phone_total"] = number(ppage, "#count-total")
    shot(ppage, "overview-phone")
    browser.close()

print(json.dumps(seen))
