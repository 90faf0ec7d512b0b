//! Bar charts as SVG made on the server: no script, nothing but numbers and dates this
//! module formats itself goes into the markup. Each chart carries a `<title>` and a
//! `<desc>`, and the page shows the same numbers in a table for screen readers.

use time::{Duration, OffsetDateTime};

const W: usize = 600;
const H: usize = 160;
const PAD: usize = 24;

/// An SVG bar chart of `values`, one bar a day from `first_day`, labelled with the first,
/// middle and last day.
pub(crate) fn bars(
    title: &str,
    values: &[u64],
    first_day: OffsetDateTime,
    class: &'static str,
) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1);
    let slot = (W - 2 * PAD) as f64 / n as f64;
    let plot_h = (H - 2 * PAD) as f64;
    let title = esc(title);
    let total: u64 = values.iter().sum();
    let mut out = format!(
        r#"<svg class="chart {class}" viewBox="0 0 {W} {H}" role="img" aria-labelledby="t-{class} d-{class}" xmlns="http://www.w3.org/2000/svg"><title id="t-{class}">{title}</title><desc id="d-{class}">{total} in all over {n} days; the busiest day has {max}.</desc>"#
    );
    out.push_str(&format!(
        r#"<line x1="{PAD}" y1="{y}" x2="{x2}" y2="{y}" class="axis"/>"#,
        y = H - PAD,
        x2 = W - PAD
    ));
    for (i, v) in values.iter().enumerate() {
        let h = (*v as f64 / max as f64) * plot_h;
        let x = PAD as f64 + i as f64 * slot + 1.0;
        let y = (H - PAD) as f64 - h;
        let day = day_label(first_day + Duration::days(i as i64));
        out.push_str(&format!(
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" class="bar"><title>{day}: {v}</title></rect>"#,
            w = (slot - 2.0).max(1.0),
        ));
    }
    for i in [0, n / 2, n - 1] {
        let x = PAD as f64 + i as f64 * slot + slot / 2.0;
        out.push_str(&format!(
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{d}</text>"#,
            y = H - 6,
            d = day_label(first_day + Duration::days(i as i64))
        ));
    }
    out.push_str(&format!(
        r#"<text x="{PAD}" y="{y}" class="tick">max {max}</text></svg>"#,
        y = PAD - 8
    ));
    out
}

fn day_label(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_bar_per_day_and_escapes_its_title() {
        let svg = bars("a <b>", &[0, 3, 1], OffsetDateTime::UNIX_EPOCH, "x");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("1970-01-02: 3"));
    }
}
