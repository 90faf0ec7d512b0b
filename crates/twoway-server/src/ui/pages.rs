//! The dashboard's pages and actions: each gathers what it shows through the `Ca` (on a
//! blocking thread) and renders one askama template.

use super::filter::{csv_field, valid_back, Filters, PAGE_SIZES};
use super::{
    chart, download, enc, html, parse_query, respond, run_ca, see_other, short, Failure, Viewer,
};
use crate::routes::Resp;
use crate::State;
use askama::Template;
use http::StatusCode;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use twoway_store::{AuditEntry, AuditQuery, CertRecord};

/// Rows of a CSV or JSON export at most.
const EXPORT_MAX: usize = 100_000;

/// Audit entries on a page.
const AUDIT_PAGE: usize = 50;

/// The revocation reasons offered.
const REASONS: [&str; 6] = [
    "unspecified",
    "key-compromise",
    "affiliation-changed",
    "superseded",
    "cessation-of-operation",
    "privilege-withdrawn",
];

/// What every page's frame shows.
pub(crate) struct Frame {
    title: String,
    nav: &'static str,
    viewer: String,
    is_admin: bool,
    csrf: String,
}

impl Frame {
    fn new(v: &Viewer, title: impl Into<String>, nav: &'static str) -> Self {
        Frame {
            title: title.into(),
            nav,
            viewer: v.label(),
            is_admin: v.is_admin(),
            csrf: v.csrf.clone(),
        }
    }
}

fn when(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// "in 3 d", "2 h ago".
fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = t - now;
    let (abs, future) = if d.is_negative() {
        (-d, false)
    } else {
        (d, true)
    };
    let text = if abs.whole_days() >= 2 {
        format!("{} d", abs.whole_days())
    } else if abs.whole_hours() >= 1 {
        format!("{} h", abs.whole_hours())
    } else {
        format!("{} min", abs.whole_minutes())
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn render<T: Template>(status: StatusCode, t: &T) -> Result<Resp, Failure> {
    match t.render() {
        Ok(body) => Ok(html(status, body)),
        Err(e) => {
            tracing::error!(error = %e, "dashboard template failed");
            Err(Failure::internal())
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    f: Option<Frame>,
    status: u16,
    heading: &'static str,
    message: String,
}

/// The page of a refusal or failure.
pub(crate) fn failure(viewer: Option<&Viewer>, f: Failure) -> Resp {
    let page = ErrorPage {
        f: viewer.map(|v| Frame::new(v, f.title, "")),
        status: f.status.as_u16(),
        heading: f.title,
        message: f.message,
    };
    match page.render() {
        Ok(body) => html(f.status, body),
        Err(_) => respond(f.status, "text/plain; charset=utf-8", "error"),
    }
}

/// GET routes.
pub(crate) async fn get(
    state: &Arc<State>,
    v: &Viewer,
    path: &str,
    query: &str,
) -> Result<Resp, Failure> {
    let rest = path.strip_prefix("/ui/").unwrap_or("");
    match rest {
        "" => overview(state, v).await,
        "certificates" => inventory(state, v, query).await,
        "certificates.csv" => export(state, query, true).await,
        "certificates.json" => export(state, query, false).await,
        "owners" => owners(state, v).await,
        "tokens" => tokens(state, v, None).await,
        "audit" => audit(state, v, query).await,
        r => match r.strip_prefix("certificates/").map(|x| x.split('/')) {
            Some(mut parts) => {
                let key = parts.next().unwrap_or("").to_string();
                match (parts.next(), parts.next()) {
                    (None, _) => certificate(state, v, &key, query).await,
                    (Some("cert.pem"), None) => pem(state, &key, false).await,
                    (Some("chain.pem"), None) => pem(state, &key, true).await,
                    (Some("revoke"), None) => confirm(state, v, &key, query).await,
                    _ => Err(no_page(path)),
                }
            }
            None => Err(no_page(path)),
        },
    }
}

fn no_page(path: &str) -> Failure {
    Failure::not_found(format!(
        "The dashboard has no page {path}: start from the overview at /ui/."
    ))
}

/// POST routes (Origin, role and CSRF token already checked).
pub(crate) async fn post(
    state: &Arc<State>,
    v: &Viewer,
    path: &str,
    form: &[(String, String)],
) -> Result<Resp, Failure> {
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let rest = path.strip_prefix("/ui/").unwrap_or("");
    if rest == "tokens" {
        return create_token(state, v, &field).await;
    }
    if let Some(id) = rest
        .strip_prefix("tokens/")
        .and_then(|r| r.strip_suffix("/withdraw"))
    {
        let id = id.to_string();
        let actor = v.actor();
        run_ca(state, move |ca| ca.withdraw_token(&id, &actor)).await?;
        return Ok(see_other("/ui/tokens"));
    }
    if let Some(key) = rest
        .strip_prefix("certificates/")
        .and_then(|r| r.strip_suffix("/revoke"))
    {
        if field("confirm") != "yes" {
            return Err(Failure::bad(
                "The revocation was not confirmed: use the confirmation page's Revoke button.",
            ));
        }
        let reason: twoway_pki::Reason = field("reason")
            .parse()
            .map_err(|e: twoway_pki::Error| Failure::bad(e.to_string()))?;
        let key = key.to_string();
        let actor = v.actor();
        let rec = run_ca(state, move |ca| ca.revoke(&key, reason, &actor)).await?;
        crate::routes::invalidate(state);
        tracing::info!(serial = %rec.serial, actor = %v.actor(), "revoked from the dashboard");
        let back = field("back");
        let mut loc = format!("/ui/certificates/{}?done=revoked", rec.fingerprint);
        if valid_back(&back) {
            loc.push_str(&format!("&back={}", enc(&back)));
        }
        return Ok(see_other(&loc));
    }
    Err(Failure::not_found(format!(
        "The dashboard takes no action at {path}."
    )))
}

// ---------------------------------------------------------------- overview

struct Count {
    name: String,
    count: u64,
    link: String,
}

struct CaCert {
    role: &'static str,
    subject: String,
    not_after: String,
    left: String,
    warn: bool,
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Overview {
    f: Frame,
    total: u64,
    by_status: Vec<Count>,
    by_profile: Vec<Count>,
    expiring: Vec<Count>,
    expiry_chart: String,
    issued_chart: String,
    expiry_rows: Vec<(String, u64)>,
    crl: Vec<String>,
    ocsp: Vec<String>,
    cas: Vec<CaCert>,
}

async fn overview(state: &Arc<State>, v: &Viewer) -> Result<Resp, Failure> {
    let now = OffsetDateTime::now_utc();
    let stats = run_ca(state, move |ca| ca.inventory_stats(now)).await?;
    let total = stats.by_status.iter().map(|(_, n)| n).sum();
    let by_status = ["active", "expired", "revoked"]
        .iter()
        .map(|s| Count {
            name: s.to_string(),
            count: stats
                .by_status
                .iter()
                .find(|(n, _)| n == s)
                .map(|(_, c)| *c)
                .unwrap_or(0),
            link: format!("/ui/certificates?status={s}"),
        })
        .collect();
    let by_profile = stats
        .by_profile
        .iter()
        .map(|(p, n)| Count {
            name: p.clone(),
            count: *n,
            link: format!("/ui/certificates?profile={}", enc(p)),
        })
        .collect();
    let expiring = [("24 hours", "24h"), ("7 days", "7d"), ("30 days", "30d")]
        .iter()
        .zip(stats.expiring)
        .map(|((label, w), n)| Count {
            name: label.to_string(),
            count: n,
            link: format!("/ui/certificates?expiring={w}&sort=expiry"),
        })
        .collect();
    let midnight = now.replace_time(time::Time::MIDNIGHT);
    let expiry_chart = chart::bars(
        "Active certificates expiring per day, next 30 days",
        &stats.expiring_per_day,
        midnight,
        "expiry",
    );
    let issued_chart = chart::bars(
        "Certificates recorded per day, last 30 days",
        &stats.issued_per_day,
        midnight - Duration::days(29),
        "issued",
    );
    let expiry_rows = stats
        .expiring_per_day
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| {
            let d = midnight + Duration::days(i as i64);
            (
                format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
                *n,
            )
        })
        .collect();
    let crl = match state.crl.status() {
        None => vec![
            "No CRL signed since the server started: the first request for /crl signs one.".into(),
        ],
        Some((this, next, size, dirty)) => vec![
            format!(
                "Last signed {} ({}), {size} bytes",
                when(this),
                relative(this, now)
            ),
            format!("Next update {} ({})", when(next), relative(next, now)),
            if dirty {
                "A revocation since: the next request for /crl signs a new one.".into()
            } else {
                "Current: no revocation since it was signed.".into()
            },
        ],
    };
    let signer = state.ocsp.signer();
    let mut ocsp = vec![format!(
        "Responder certificate valid until {} ({})",
        when(signer.not_after),
        relative(signer.not_after, now)
    )];
    let counts = state.metrics.ocsp_counts();
    let answered: u64 = counts.iter().map(|(_, n)| n).sum();
    ocsp.push(if answered == 0 {
        "No OCSP request answered since the server started.".into()
    } else {
        format!(
            "Answered since start: {}",
            counts
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    let mut cas = Vec::new();
    let ca_cert = |role: &'static str, info: &twoway_pki::CertInfo| CaCert {
        role,
        subject: info.subject.clone(),
        not_after: when(info.not_after),
        left: relative(info.not_after, now),
        warn: info.not_after - now < Duration::days(90),
    };
    if let Some(root) = twoway_pki::parse_certificates(state.root_pem.as_bytes())
        .ok()
        .and_then(|ders| {
            ders.first()
                .and_then(|d| twoway_pki::CertInfo::from_der(d).ok())
        })
    {
        cas.push(ca_cert("Root", &root));
    }
    cas.push(ca_cert("Intermediate", state.ca.intermediate_info()));
    render(
        StatusCode::OK,
        &Overview {
            f: Frame::new(v, "Overview", "overview"),
            total,
            by_status,
            by_profile,
            expiring,
            expiry_chart,
            issued_chart,
            expiry_rows,
            crl,
            ocsp,
            cas,
        },
    )
}

// ---------------------------------------------------------------- inventory

struct Row {
    link: String,
    serial: String,
    name: String,
    sans: String,
    profile: String,
    owner: String,
    status: String,
    not_after: String,
    left: String,
}

struct Opt {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

fn options(current: &str, list: &[(&'static str, &'static str)]) -> Vec<Opt> {
    list.iter()
        .map(|(value, label)| Opt {
            value,
            label,
            selected: *value == current,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "ui/inventory.html")]
struct Inventory {
    f: Frame,
    q: Filters,
    error: Option<String>,
    statuses: Vec<Opt>,
    sources: Vec<Opt>,
    sorts: Vec<Opt>,
    pers: Vec<(usize, bool)>,
    rows: Vec<Row>,
    total: usize,
    first: usize,
    last: usize,
    page: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    last_link: Option<String>,
    csv: String,
    json: String,
}

fn name_of(r: &CertRecord) -> String {
    r.common_name
        .clone()
        .or_else(|| {
            r.sans
                .first()
                .map(|s| s.split_once(':').map(|x| x.1).unwrap_or(s).to_string())
        })
        .unwrap_or_else(|| r.subject.clone())
}

async fn inventory(state: &Arc<State>, v: &Viewer, query: &str) -> Result<Resp, Failure> {
    let q = Filters::parse(query)?;
    let now = OffsetDateTime::now_utc();
    let mut page = Inventory {
        f: Frame::new(v, "Inventory", "inventory"),
        error: None,
        statuses: options(
            &q.status,
            &[
                ("", "any"),
                ("active", "active"),
                ("expired", "expired"),
                ("revoked", "revoked"),
            ],
        ),
        sources: options(
            &q.source,
            &[
                ("", "any"),
                ("issued", "issued"),
                ("acme", "acme"),
                ("imported", "imported"),
            ],
        ),
        sorts: options(
            &q.sort,
            &[
                ("", "newest first"),
                ("oldest", "oldest first"),
                ("expiry", "expiring soonest"),
                ("-expiry", "expiring latest"),
            ],
        ),
        pers: PAGE_SIZES.iter().map(|p| (*p, *p == q.per)).collect(),
        rows: Vec::new(),
        total: 0,
        first: 0,
        last: 0,
        page: q.page,
        pages: 0,
        prev: None,
        next: None,
        last_link: None,
        csv: format!("/ui/certificates.csv?{}", q.filter_qs()),
        json: format!("/ui/certificates.json?{}", q.filter_qs()),
        q,
    };
    let cq = match page.q.query(now) {
        Ok(cq) => cq,
        Err(msg) => {
            page.error = Some(msg);
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    let sort = cq.sort;
    let result = run_ca(state, move |ca| ca.list(&cq)).await?;
    let per = page.q.per;
    page.total = result.total;
    page.pages = result.total.div_ceil(per);
    let back = page.q.view_path();
    page.rows = result
        .items
        .iter()
        .map(|r| Row {
            link: format!("/ui/certificates/{}?back={}", r.fingerprint, enc(&back)),
            serial: short(&r.serial),
            name: name_of(r),
            sans: r.sans.join(", "),
            profile: r.profile.clone(),
            owner: r.owner.clone().unwrap_or_default(),
            status: r.effective_status(now).to_string(),
            not_after: when(r.not_after),
            left: relative(r.not_after, now),
        })
        .collect();
    if !page.rows.is_empty() {
        page.first = (page.q.page - 1) * per + 1;
        page.last = page.first + page.rows.len() - 1;
    }
    if page.q.page > 1 {
        page.prev = Some(format!(
            "/ui/certificates?{}",
            page.q.page_qs((page.q.page - 1).min(page.pages.max(1)))
        ));
    }
    if page.q.page < page.pages {
        // Next follows the last row (keyset paging: a deep page costs what the first does);
        // with a SAN glob, paging is by number.
        let after = match result.items.last() {
            Some(last) if page.q.san.is_empty() => format!(
                "&after={}",
                enc(&twoway_store::Cursor::of(last, sort).encode())
            ),
            _ => String::new(),
        };
        page.next = Some(format!(
            "/ui/certificates?{}{after}",
            page.q.page_qs(page.q.page + 1)
        ));
    }
    let mut status = StatusCode::OK;
    if page.rows.is_empty() && page.q.page > 1 && page.total > 0 {
        page.error = Some(format!(
            "Page {} is past the end: this view has {} page{}.",
            page.q.page,
            page.pages,
            if page.pages == 1 { "" } else { "s" }
        ));
        page.last_link = Some(format!("/ui/certificates?{}", page.q.page_qs(page.pages)));
        status = StatusCode::NOT_FOUND;
    }
    render(status, &page)
}

async fn export(state: &Arc<State>, query: &str, csv: bool) -> Result<Resp, Failure> {
    let q = Filters::parse(query)?;
    let now = OffsetDateTime::now_utc();
    let mut cq = q.query(now).map_err(Failure::bad)?;
    let rows = run_ca(state, move |ca| {
        let mut out = Vec::new();
        cq.limit = 10_000;
        cq.offset = 0;
        loop {
            let page = ca.list(&cq)?;
            let n = page.items.len();
            out.extend(page.items);
            if n < cq.limit || out.len() >= EXPORT_MAX {
                break;
            }
            cq.offset += n;
        }
        out.truncate(EXPORT_MAX);
        Ok(out)
    })
    .await?;
    if csv {
        let mut out = String::from(
            "serial,fingerprint,subject,sans,profile,owner,status,not_before,not_after,source,issuer\r\n",
        );
        for r in &rows {
            let fields = [
                r.serial.clone(),
                r.fingerprint.clone(),
                r.subject.clone(),
                r.sans.join(" "),
                r.profile.clone(),
                r.owner.clone().unwrap_or_default(),
                r.effective_status(now).to_string(),
                rfc(r.not_before),
                rfc(r.not_after),
                r.source.as_str().to_string(),
                r.issuer.clone(),
            ];
            out.push_str(
                &fields
                    .iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push_str("\r\n");
        }
        Ok(download("text/csv; charset=utf-8", "certificates.csv", out))
    } else {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "serial": r.serial, "fingerprint": r.fingerprint, "subject": r.subject,
                    "issuer": r.issuer, "sans": r.sans, "profile": r.profile, "owner": r.owner,
                    "labels": r.labels, "status": r.effective_status(now),
                    "not_before": rfc(r.not_before), "not_after": rfc(r.not_after),
                    "source": r.source.as_str(), "revoked_at": r.revoked_at.map(rfc),
                    "revocation_reason": r.revocation_reason,
                })
            })
            .collect();
        let body =
            serde_json::to_vec_pretty(&serde_json::json!({"items": items, "total": rows.len()}))
                .map_err(|_| Failure::internal())?;
        Ok(download("application/json", "certificates.json", body))
    }
}

fn rfc(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

// ---------------------------------------------------------------- certificate

struct Field {
    name: &'static str,
    value: String,
}

struct Link {
    text: String,
    href: String,
}

struct Audit {
    seq: i64,
    time: String,
    actor: String,
    action: String,
    target: String,
    target_link: Option<String>,
    details: String,
}

fn audit_row(e: &AuditEntry) -> Audit {
    let target_link = (e.target.len() >= 16
        && e.target.chars().all(|c| c.is_ascii_hexdigit())
        && e.action.starts_with("cert."))
    .then(|| format!("/ui/certificates/{}", e.target));
    Audit {
        seq: e.seq,
        time: e
            .time
            .chars()
            .take(19)
            .collect::<String>()
            .replace('T', " ")
            + " UTC",
        actor: e.actor.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        target_link,
        details: e.details.clone(),
    }
}

#[derive(Template)]
#[template(path = "ui/certificate.html")]
struct Certificate {
    f: Frame,
    fp: String,
    heading: String,
    status: String,
    notice: Option<String>,
    fields: Vec<Field>,
    pem: String,
    replaced: Option<Link>,
    replaced_by: Option<Link>,
    rows: Vec<Audit>,
    can_revoke: bool,
    reasons: Vec<&'static str>,
    back: Option<String>,
}

fn back_of(query: &str) -> Option<String> {
    parse_query(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "back")
        .map(|(_, v)| v)
        .filter(|b| valid_back(b))
}

fn link_to(r: &CertRecord, now: OffsetDateTime) -> Link {
    Link {
        text: format!(
            "{} (serial {}, {})",
            name_of(r),
            short(&r.serial),
            r.effective_status(now)
        ),
        href: format!("/ui/certificates/{}", r.fingerprint),
    }
}

async fn certificate(
    state: &Arc<State>,
    v: &Viewer,
    key: &str,
    query: &str,
) -> Result<Resp, Failure> {
    let key = key.to_string();
    let (rec, entries, lineage) = run_ca(state, move |ca| {
        let rec = ca.store().find_certificate(&key)?;
        let entries = ca.audit_search(&AuditQuery {
            target: Some(rec.serial.clone()),
            limit: 200,
            ..Default::default()
        })?;
        let lineage = ca.lineage(&rec, &entries)?;
        Ok((rec, entries, lineage))
    })
    .await?;
    let now = OffsetDateTime::now_utc();
    let status = rec.effective_status(now).to_string();
    let info = twoway_pki::parse_certificates(rec.pem.as_bytes())
        .ok()
        .and_then(|d| {
            d.first()
                .and_then(|d| twoway_pki::CertInfo::from_der(d).ok())
        });
    let mut fields = vec![
        Field {
            name: "Subject",
            value: if rec.subject.is_empty() {
                "empty (the SANs name it)".into()
            } else {
                rec.subject.clone()
            },
        },
        Field {
            name: "Issuer",
            value: rec.issuer.clone(),
        },
        Field {
            name: "Serial",
            value: rec.serial.clone(),
        },
        Field {
            name: "SHA-256 fingerprint",
            value: rec.fingerprint.clone(),
        },
        Field {
            name: "Subject alternative names",
            value: rec.sans.join(", "),
        },
        Field {
            name: "Profile",
            value: rec.profile.clone(),
        },
        Field {
            name: "Key",
            value: rec.key_type.clone(),
        },
        Field {
            name: "Not before",
            value: when(rec.not_before),
        },
        Field {
            name: "Not after",
            value: format!("{} ({})", when(rec.not_after), relative(rec.not_after, now)),
        },
        Field {
            name: "Owner",
            value: rec.owner.clone().unwrap_or_else(|| "none".into()),
        },
        Field {
            name: "Labels",
            value: if rec.labels.is_empty() {
                "none".into()
            } else {
                rec.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        },
        Field {
            name: "Location",
            value: rec.location.clone().unwrap_or_else(|| "none".into()),
        },
        Field {
            name: "Source",
            value: rec.source.as_str().into(),
        },
        Field {
            name: "Recorded",
            value: when(rec.recorded_at),
        },
    ];
    if let Some(at) = rec.revoked_at {
        fields.push(Field {
            name: "Revoked",
            value: format!(
                "{} ({})",
                when(at),
                rec.revocation_reason.clone().unwrap_or_default()
            ),
        });
    }
    if let Some(i) = &info {
        fields.push(Field {
            name: "Certificate authority",
            value: if i.is_ca { "yes".into() } else { "no".into() },
        });
        if let Some(s) = &i.subject_key_id {
            fields.push(Field {
                name: "Subject key identifier",
                value: s.clone(),
            });
        }
        if let Some(s) = &i.authority_key_id {
            fields.push(Field {
                name: "Authority key identifier",
                value: s.clone(),
            });
        }
    }
    let done = parse_query(query)
        .ok()
        .and_then(|q| q.into_iter().find(|(k, _)| k == "done").map(|(_, v)| v));
    let notice = match done.as_deref() {
        Some("revoked") if rec.status == twoway_store::CertStatus::Revoked => Some(format!(
            "Certificate {} is revoked ({}). The CRL and OCSP answers change at once.",
            short(&rec.serial),
            rec.revocation_reason.clone().unwrap_or_default()
        )),
        _ => None,
    };
    let can_revoke = v.is_admin()
        && rec.status == twoway_store::CertStatus::Active
        && rec.source.signed_here()
        && rec.not_after > now;
    render(
        StatusCode::OK,
        &Certificate {
            f: Frame::new(
                v,
                format!("Certificate {}", short(&rec.serial)),
                "inventory",
            ),
            heading: name_of(&rec),
            fp: rec.fingerprint.clone(),
            status,
            notice,
            fields,
            pem: rec.pem.clone(),
            replaced: lineage.replaced.as_ref().map(|r| link_to(r, now)),
            replaced_by: lineage.replaced_by.as_ref().map(|r| link_to(r, now)),
            rows: entries.iter().map(audit_row).collect(),
            can_revoke,
            reasons: REASONS.to_vec(),
            back: back_of(query),
        },
    )
}

async fn pem(state: &Arc<State>, key: &str, chain: bool) -> Result<Resp, Failure> {
    let key = key.to_string();
    let rec = run_ca(state, move |ca| Ok(ca.store().find_certificate(&key)?)).await?;
    let mut body = rec.pem.clone();
    if chain {
        if !body.ends_with('\n') {
            body.push('\n');
        }
        if let Some(pem) = state.ca.issuer_pem(&rec.issuer) {
            body.push_str(&pem);
        }
    }
    let name = format!(
        "{}-{}.pem",
        short(&rec.serial),
        if chain { "chain" } else { "cert" }
    );
    Ok(download("application/x-pem-file", &name, body))
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
struct Confirm {
    f: Frame,
    fp: String,
    name: String,
    serial: String,
    sans: String,
    owner: String,
    reason: String,
    back: String,
}

async fn confirm(state: &Arc<State>, v: &Viewer, key: &str, query: &str) -> Result<Resp, Failure> {
    if !v.is_admin() {
        return Err(Failure::forbidden(
            "Auditors read the dashboard but revoke nothing: administrators are listed in [server] admins in ca.toml.",
        ));
    }
    let form = parse_query(query)?;
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let reason = field("reason");
    if !REASONS.contains(&reason.as_str()) {
        return Err(Failure::bad(format!(
            "reason {reason:?}: choose one of {}",
            REASONS.join(", ")
        )));
    }
    let key = key.to_string();
    let rec = run_ca(state, move |ca| Ok(ca.store().find_certificate(&key)?)).await?;
    if rec.status == twoway_store::CertStatus::Revoked {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("certificate {} is already revoked", rec.serial),
        ));
    }
    let back = field("back");
    render(
        StatusCode::OK,
        &Confirm {
            f: Frame::new(v, "Revoke certificate", "inventory"),
            fp: rec.fingerprint.clone(),
            name: name_of(&rec),
            serial: rec.serial.clone(),
            sans: rec.sans.join(", "),
            owner: rec.owner.clone().unwrap_or_else(|| "none".into()),
            reason,
            back: if valid_back(&back) {
                back
            } else {
                String::new()
            },
        },
    )
}

// ---------------------------------------------------------------- owners

struct OwnerRow {
    owner: String,
    link: String,
    total: u64,
    expiring: u64,
    expiring_link: String,
    revoked: u64,
}

#[derive(Template)]
#[template(path = "ui/owners.html")]
struct Owners {
    f: Frame,
    rows: Vec<OwnerRow>,
}

async fn owners(state: &Arc<State>, v: &Viewer) -> Result<Resp, Failure> {
    let now = OffsetDateTime::now_utc();
    let list = run_ca(state, move |ca| ca.owners(now, 500)).await?;
    let rows = list
        .into_iter()
        .map(|o| {
            let name = o.owner.clone().unwrap_or_default();
            OwnerRow {
                link: format!("/ui/certificates?owner={}", enc(&name)),
                expiring_link: format!(
                    "/ui/certificates?owner={}&expiring=30d&sort=expiry",
                    enc(&name)
                ),
                owner: if name.is_empty() {
                    "(no owner)".into()
                } else {
                    name
                },
                total: o.total,
                expiring: o.expiring_30d,
                revoked: o.revoked,
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &Owners {
            f: Frame::new(v, "Owners", "owners"),
            rows,
        },
    )
}

// ---------------------------------------------------------------- tokens

struct TokenRow {
    id: String,
    sans: String,
    profile: String,
    owner: String,
    created_by: String,
    created: String,
    expires: String,
    state: &'static str,
    withdrawable: bool,
}

struct NewSecret {
    secret: String,
    id: String,
    sans: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "ui/tokens.html")]
struct Tokens {
    f: Frame,
    rows: Vec<TokenRow>,
    created: Option<NewSecret>,
    error: Option<String>,
}

async fn tokens(
    state: &Arc<State>,
    v: &Viewer,
    created: Option<NewSecret>,
) -> Result<Resp, Failure> {
    token_page(state, v, created, None, StatusCode::OK).await
}

async fn token_page(
    state: &Arc<State>,
    v: &Viewer,
    created: Option<NewSecret>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Resp, Failure> {
    let list = run_ca(state, |ca| ca.list_tokens(200)).await?;
    let now = OffsetDateTime::now_utc();
    let rows = list
        .iter()
        .map(|t| {
            let st = if t.used_at.is_some() {
                "used"
            } else if t.expires_at <= now {
                "expired"
            } else {
                "unused"
            };
            TokenRow {
                id: t.hash.chars().take(16).collect(),
                sans: t.sans.join(", "),
                profile: t.profile.clone(),
                owner: t.owner.clone().unwrap_or_default(),
                created_by: t.created_by.clone(),
                created: when(t.created_at),
                expires: format!("{} ({})", when(t.expires_at), relative(t.expires_at, now)),
                state: st,
                withdrawable: st == "unused",
            }
        })
        .collect();
    let mut resp = render(
        status,
        &Tokens {
            f: Frame::new(v, "Enrollment tokens", "tokens"),
            rows,
            created,
            error,
        },
    )?;
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

async fn create_token(
    state: &Arc<State>,
    v: &Viewer,
    field: &(dyn Fn(&str) -> String + Sync),
) -> Result<Resp, Failure> {
    let parsed = (|| -> Result<twoway_ca::NewToken, String> {
        let sans = field("sans")
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<twoway_pki::San>()
                    .map_err(|e| format!("names: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sans.is_empty() {
            return Err("names: give at least one, such as DNS:api.example.internal or URI:spiffe://example.org/api".into());
        }
        let profile: twoway_pki::Profile = field("profile")
            .parse()
            .map_err(|e: twoway_pki::Error| format!("profile: {e}"))?;
        let ttl = twoway_pki::parse_duration(&field("ttl"))
            .map_err(|e| format!("token lifetime: {e} (write 15m, 1h or 7d)"))?;
        let cert_ttl = match field("cert_ttl") {
            s if s.is_empty() => None,
            s => Some(
                twoway_pki::parse_duration(&s)
                    .map_err(|e| format!("certificate lifetime: {e} (write 24h or 30d)"))?,
            ),
        };
        let owner = Some(field("owner")).filter(|o| !o.is_empty());
        Ok(twoway_ca::NewToken {
            sans,
            profile,
            ttl,
            cert_ttl,
            owner,
            actor: v.actor(),
        })
    })();
    let t = match parsed {
        Ok(t) => t,
        Err(msg) => {
            return token_page(state, v, None, Some(msg), StatusCode::BAD_REQUEST).await;
        }
    };
    match run_ca(state, move |ca| ca.create_token(&t)).await {
        Ok((secret, rec)) => {
            let created = NewSecret {
                secret,
                id: rec.hash.chars().take(16).collect(),
                sans: rec.sans.join(", "),
                expires: when(rec.expires_at),
            };
            token_page(state, v, Some(created), None, StatusCode::CREATED).await
        }
        Err(f) if f.status.is_client_error() => {
            token_page(state, v, None, Some(f.message), f.status).await
        }
        Err(f) => Err(f),
    }
}

// ---------------------------------------------------------------- audit

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    f: Frame,
    actor: String,
    action: String,
    target: String,
    rows: Vec<Audit>,
    next: Option<String>,
    verified: Option<(bool, String)>,
    verify_link: String,
}

async fn audit(state: &Arc<State>, v: &Viewer, query: &str) -> Result<Resp, Failure> {
    let mut q = AuditQuery {
        limit: AUDIT_PAGE,
        ..Default::default()
    };
    let mut verify = false;
    for (k, val) in parse_query(query)? {
        let val = val.trim().to_string();
        match k.as_str() {
            "actor" => q.actor = Some(val).filter(|s| !s.is_empty()),
            "action" => q.action = Some(val).filter(|s| !s.is_empty()),
            "target" => q.target = Some(val).filter(|s| !s.is_empty()),
            "before" if val.is_empty() => {}
            "before" => {
                q.before = Some(val.parse().map_err(|_| {
                    Failure::bad(format!("before {val:?}: an audit sequence number"))
                })?)
            }
            "verify" => verify = val == "1",
            other => {
                return Err(Failure::bad(format!(
                    "unknown filter {other:?}: the audit log takes actor, action, target and before"
                )))
            }
        }
    }
    let qq = q.clone();
    let (entries, verified) = run_ca(state, move |ca| {
        let entries = ca.audit_search(&qq)?;
        let verified = if verify {
            let (n, problems) = ca.verify_audit()?;
            Some(match problems.first() {
                None => (true, format!("The chain of all {n} entries verifies: no entry altered or removed.")),
                Some(p) => (
                    false,
                    format!(
                        "The chain is broken at entry {}: {} ({} problem{} in {n} entries). Compare with a checkpoint: twoway audit verify --checkpoint FILE.",
                        p.seq,
                        p.problem,
                        problems.len(),
                        if problems.len() == 1 { "" } else { "s" }
                    ),
                ),
            })
        } else {
            None
        };
        Ok((entries, verified))
    })
    .await?;
    let filt = |extra: &str| {
        let mut parts = Vec::new();
        for (k, v) in [
            ("actor", &q.actor),
            ("action", &q.action),
            ("target", &q.target),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", enc(v)));
            }
        }
        if !extra.is_empty() {
            parts.push(extra.to_string());
        }
        format!("/ui/audit?{}", parts.join("&"))
    };
    let next = (entries.len() == AUDIT_PAGE)
        .then(|| entries.last().map(|e| filt(&format!("before={}", e.seq))))
        .flatten();
    render(
        StatusCode::OK,
        &AuditPage {
            f: Frame::new(v, "Audit log", "audit"),
            actor: q.actor.clone().unwrap_or_default(),
            action: q.action.clone().unwrap_or_default(),
            target: q.target.clone().unwrap_or_default(),
            rows: entries.iter().map(audit_row).collect(),
            next,
            verified,
            verify_link: filt("verify=1"),
        },
    )
}
