//! The inventory's filters as they live in the URL: parsed (every value checked, a clear
//! message for one that does not parse) into a store query, and written back into links,
//! so a view can be bookmarked and is the same view after a revoke.

use super::{enc, parse_query, Failure};
use time::OffsetDateTime;
use twoway_store::{CertQuery, CertSort};

/// The page sizes offered.
pub(crate) const PAGE_SIZES: [usize; 3] = [25, 50, 100];

/// The longest SAN glob or text filter taken.
const MAX_FILTER: usize = 256;

/// The inventory's filters, as given (empty: not filtering).
#[derive(Clone, Debug, Default)]
pub(crate) struct Filters {
    pub(crate) status: String,
    pub(crate) owner: String,
    pub(crate) label: String,
    pub(crate) san: String,
    pub(crate) profile: String,
    pub(crate) source: String,
    pub(crate) issuer: String,
    pub(crate) expiring: String,
    pub(crate) sort: String,
    /// Keyset paging: the page starts after this row (`KEY.FINGERPRINT`).
    pub(crate) after: String,
    pub(crate) page: usize,
    pub(crate) per: usize,
}

impl Filters {
    /// Reads the query string; unknown fields are refused (a mistyped bookmark should say
    /// so rather than show everything).
    pub(crate) fn parse(query: &str) -> Result<Self, Failure> {
        let mut f = Filters {
            page: 1,
            per: 50,
            ..Default::default()
        };
        for (k, v) in parse_query(query)? {
            let v = v.trim().to_string();
            if v.len() > MAX_FILTER {
                return Err(Failure::bad(format!(
                    "the {k} filter is longer than {MAX_FILTER} characters"
                )));
            }
            match k.as_str() {
                "status" => f.status = v,
                "owner" => f.owner = v,
                "label" => f.label = v,
                "san" => f.san = v,
                "profile" => f.profile = v,
                "source" => f.source = v,
                "issuer" => f.issuer = v,
                "expiring" => f.expiring = v,
                "sort" => f.sort = v,
                "after" => f.after = v,
                "page" if v.is_empty() => {}
                "page" => {
                    f.page = v.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
                        Failure::bad(format!("page {v:?}: a page number from 1 on"))
                    })?
                }
                "per" if v.is_empty() => {}
                "per" => {
                    f.per = v
                        .parse()
                        .ok()
                        .filter(|p| PAGE_SIZES.contains(p))
                        .ok_or_else(|| {
                            Failure::bad(format!("per {v:?}: a page size of 25, 50 or 100"))
                        })?
                }
                "back" | "done" => {}
                other => {
                    return Err(Failure::bad(format!(
                        "unknown filter {other:?}: the inventory takes status, owner, label, san, profile, source, issuer, expiring, sort, page and per"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// The store query of these filters at `now`, or a message naming the value that
    /// does not parse.
    pub(crate) fn query(&self, now: OffsetDateTime) -> Result<CertQuery, String> {
        let mut q = CertQuery {
            now: Some(now),
            ..Default::default()
        };
        match self.status.as_str() {
            "" | "any" => {}
            "active" | "revoked" | "expired" => q.status = Some(self.status.clone()),
            s => return Err(format!("status {s:?}: choose active, revoked or expired")),
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        q.owner = text(&self.owner);
        q.issuer = text(&self.issuer);
        if !self.label.is_empty() {
            let (k, v) = self
                .label
                .split_once('=')
                .ok_or_else(|| format!("label {:?}: write key=value", self.label))?;
            q.labels.push((k.trim().to_string(), v.trim().to_string()));
        }
        if !self.san.is_empty() {
            twoway_glob::Glob::new(&self.san, twoway_glob::Options::new().ignore_ascii_case())
                .map_err(|e| format!("SAN glob {:?}: {e}", self.san))?;
            q.san_glob = Some(self.san.clone());
        }
        match self.profile.as_str() {
            "" | "any" => {}
            p => {
                if !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(format!(
                        "profile {p:?}: a profile name such as server, client or peer"
                    ));
                }
                q.profile = Some(p.to_string());
            }
        }
        match self.source.as_str() {
            "" | "any" => {}
            "issued" | "imported" | "acme" => q.source = Some(self.source.clone()),
            s => return Err(format!("source {s:?}: choose issued, imported or acme")),
        }
        if !self.expiring.is_empty() {
            let d = twoway_pki::parse_duration(&self.expiring).map_err(|e| {
                format!(
                    "expiring {:?}: {e} (write a window such as 24h, 7d or 30d)",
                    self.expiring
                )
            })?;
            if d <= time::Duration::ZERO {
                return Err(format!(
                    "expiring {:?}: a window longer than zero",
                    self.expiring
                ));
            }
            q.expiring_before = Some(now + d);
        }
        q.sort = CertSort::parse(&self.sort).ok_or_else(|| {
            format!(
                "sort {:?}: choose newest, oldest, expiry or -expiry",
                self.sort
            )
        })?;
        q.limit = self.per;
        if self.after.is_empty() || q.san_glob.is_some() {
            q.offset = (self.page - 1).saturating_mul(self.per);
        } else {
            q.after = Some(twoway_store::Cursor::parse(&self.after).ok_or_else(|| {
                format!(
                    "after {:?}: not a page link of this inventory (follow Next, or drop it to page by number)",
                    self.after
                )
            })?);
        }
        Ok(q)
    }

    /// The query string of these filters, without paging.
    pub(crate) fn filter_qs(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("status", &self.status),
            ("owner", &self.owner),
            ("label", &self.label),
            ("san", &self.san),
            ("profile", &self.profile),
            ("source", &self.source),
            ("issuer", &self.issuer),
            ("expiring", &self.expiring),
            ("sort", &self.sort),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", enc(v)));
            }
        }
        if self.per != 50 {
            parts.push(format!("per={}", self.per));
        }
        parts.join("&")
    }

    /// The query string of page `page` of this view.
    pub(crate) fn page_qs(&self, page: usize) -> String {
        let f = self.filter_qs();
        if f.is_empty() {
            format!("page={page}")
        } else {
            format!("{f}&page={page}")
        }
    }

    /// The path of this view (page and cursor included).
    pub(crate) fn view_path(&self) -> String {
        let mut p = format!("/ui/certificates?{}", self.page_qs(self.page));
        if !self.after.is_empty() {
            p.push_str(&format!("&after={}", enc(&self.after)));
        }
        p
    }
}

/// Whether `back` is a dashboard inventory view to return to after an action (nothing
/// else is followed: no other path, no other host).
pub(crate) fn valid_back(back: &str) -> bool {
    (back == "/ui/certificates" || back.starts_with("/ui/certificates?"))
        && back.len() <= 2048
        && !back.contains("//")
        && !back.contains('\\')
        && back.chars().all(|c| c.is_ascii_graphic())
}

/// One CSV field: quoted, and a leading `=`, `+`, `-`, `@`, tab or CR defused with a `'`
/// so a spreadsheet does not run it as a formula.
pub(crate) fn csv_field(s: &str) -> String {
    let defused = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_and_bad_values_are_named() {
        let f = Filters::parse("status=revoked&owner=team+a&san=*.x&page=3&per=25").unwrap();
        assert_eq!(f.page, 3);
        assert_eq!(
            f.page_qs(4),
            "status=revoked&owner=team%20a&san=%2A.x&per=25&page=4"
        );
        let back = Filters::parse(&f.page_qs(4)).unwrap();
        assert_eq!(back.owner, "team a");
        let now = OffsetDateTime::now_utc();
        assert!(Filters::parse("status=gone")
            .unwrap()
            .query(now)
            .unwrap_err()
            .contains("status \"gone\""));
        assert!(Filters::parse("expiring=soon")
            .unwrap()
            .query(now)
            .unwrap_err()
            .contains("24h"));
        assert!(Filters::parse("page=0").is_err());
        assert!(Filters::parse("after=1.zz")
            .unwrap()
            .query(now)
            .unwrap_err()
            .contains("not a page link"));
        let q = Filters::parse("after=1700000000.ab&page=3")
            .unwrap()
            .query(now)
            .unwrap();
        assert_eq!((q.offset, q.after.map(|c| c.key)), (0, Some(1_700_000_000)));
        assert!(Filters::parse("colour=red").is_err());
    }

    #[test]
    fn back_links_stay_on_the_inventory_and_csv_is_defused() {
        assert!(valid_back("/ui/certificates?status=active&page=2"));
        assert!(!valid_back("//evil.example/ui/certificates"));
        assert!(!valid_back("https://evil.example/"));
        assert!(!valid_back("/ui/tokens"));
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }
}
