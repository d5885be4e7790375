//! The simulation report as one self-contained HTML file: inline CSS and SVG charts, no scripts, no
//! network fetches. Charts: hub load before and after against each hub's target and capacity, the move
//! matrix as a heat map, and assignments and moves per rule.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::report::{Summary, duration_words, group};

/// The opening of a self-contained report page: the shared style (with `extra_css` for the page's own
/// tables) and the title as its heading. The plan's report uses it too.
pub(crate) fn page_start(title: &str, extra_css: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1f24;max-width:1200px}}
h1{{font-size:1.5rem}} h2{{font-size:1.15rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}}
{extra_css}
.legend span{{display:inline-block;margin-right:1.2rem}} .sw{{display:inline-block;width:.9rem;height:.9rem;vertical-align:middle;margin-right:.3rem}}
svg text{{font-size:11px;fill:#1b1f24}} .note{{color:#57606a;font-size:.9rem}}
</style></head><body>
<h1>{t}</h1>
"#,
        t = esc(title)
    )
}

/// Escapes text for HTML and SVG.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report.
pub fn render(s: &Summary) -> String {
    let title = format!("dps-allocator simulation: {} devices", group(s.devices));
    let mut o = String::with_capacity(64 * 1024);
    o.push_str(&page_start(
        &title,
        "table.kv td{padding:.15rem .8rem .15rem 0} table.kv td:first-child{color:#57606a}",
    ));
    summary_table(&mut o, s);
    let _ = write!(o, "<h2>Hub load</h2>");
    hub_chart(&mut o, s);
    let _ = write!(o, "<h2>Moves between hubs</h2>");
    move_matrix(&mut o, s);
    let _ = write!(o, "<h2>Per rule</h2>");
    rule_chart(&mut o, s);
    let _ = writeln!(o, "</body></html>");
    o
}

fn summary_table(o: &mut String, s: &Summary) {
    let pct = |n: u64| {
        if s.devices > 0 {
            100.0 * n as f64 / s.devices as f64
        } else {
            0.0
        }
    };
    let _ = write!(o, r#"<table class="kv">"#);
    let mut row = |k: &str, v: String| {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    };
    row(
        "policy",
        format!("{} (revision {})", s.policy.source, s.policy.revision),
    );
    if let Some(b) = &s.baseline {
        row("baseline", format!("{} (revision {})", b.source, b.revision));
    }
    row("devices", group(s.devices));
    row("moved", format!("{} ({:.2}%)", group(s.moved), pct(s.moved)));
    row("rejected", group(s.rejected));
    row("no eligible hub", group(s.no_eligible_hub));
    row("unknown location", group(s.unknown_location));
    let r = &s.reprovisioning;
    row(
        "reprovisioning the movers",
        format!(
            "{} at {} registrations/min × {} DPS unit(s)",
            duration_words(r.minutes),
            group(r.rate_per_minute as u64),
            r.units
        ),
    );
    if let Some(w) = &s.wave {
        row(
            "this rebalance wave",
            format!(
                "{} devices move now, {} pending for later waves",
                group(w.moving_now),
                group(w.pending)
            ),
        );
    }
    let _ = write!(o, "</table>");
}

const BEFORE: &str = "#afb8c1";
const AFTER: &str = "#0969da";
const TARGET: &str = "#1a7f37";
const OVER: &str = "#cf222e";

fn hub_chart(o: &mut String, s: &Summary) {
    let placed: u64 = s.hubs.iter().map(|h| h.devices).sum();
    // Scale to the loads and targets; a capacity far beyond them is printed, not drawn.
    let max = s
        .hubs
        .iter()
        .flat_map(|h| [h.devices_before, h.devices, (h.target_share * placed as f64) as u64])
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let (label_w, bar_w, row_h) = (330.0, 700.0, 26.0);
    let height = 20.0 + row_h * s.hubs.len() as f64;
    let _ = write!(
        o,
        r#"<p class="legend"><span><i class="sw" style="background:{BEFORE}"></i>before</span><span><i class="sw" style="background:{AFTER}"></i>after</span><span><i class="sw" style="background:{TARGET}"></i>target (weight share)</span><span><i class="sw" style="background:{OVER}"></i>capacity</span></p>
<svg id="hub-load" role="img" aria-label="hub load" width="100%" style="max-width:{w}px" viewBox="0 0 {w} {height}" xmlns="http://www.w3.org/2000/svg">"#,
        w = label_w + bar_w + 200.0
    );
    for (i, h) in s.hubs.iter().enumerate() {
        let y = 10.0 + row_h * i as f64;
        let x = |n: f64| label_w + bar_w * n / max;
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 15.0,
            esc(&h.host)
        );
        let _ = write!(
            o,
            r#"<rect x="{label_w}" y="{}" width="{:.1}" height="9" fill="{BEFORE}"><title>{}: {} before</title></rect>"#,
            y + 2.0,
            x(h.devices_before as f64) - label_w,
            esc(&h.host),
            group(h.devices_before)
        );
        let colour = if h.over_capacity { OVER } else { AFTER };
        let _ = write!(
            o,
            r#"<rect x="{label_w}" y="{}" width="{:.1}" height="9" fill="{colour}"><title>{}: {} after ({:.2}%)</title></rect>"#,
            y + 12.0,
            x(h.devices as f64) - label_w,
            esc(&h.host),
            group(h.devices),
            100.0 * h.share
        );
        if h.target_share > 0.0 {
            let tx = x(h.target_share * placed as f64);
            let _ = write!(
                o,
                r#"<line x1="{tx:.1}" x2="{tx:.1}" y1="{}" y2="{}" stroke="{TARGET}" stroke-width="2"><title>target {:.2}%</title></line>"#,
                y,
                y + 23.0,
                100.0 * h.target_share
            );
        }
        let mut label = group(h.devices);
        match h.capacity {
            Some(c) if (c as f64) <= max => {
                let cx = x(c as f64);
                let _ = write!(
                    o,
                    r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{}" y2="{}" stroke="{OVER}" stroke-dasharray="3,2"><title>capacity {}</title></line>"#,
                    y,
                    y + 23.0,
                    group(c)
                );
            }
            Some(c) => label.push_str(&format!(" (capacity {})", group(c))),
            None => {}
        }
        let lx = x(h
            .devices
            .max(h.devices_before)
            .max((h.target_share * placed as f64) as u64) as f64)
            + 6.0;
        let _ = write!(o, r#"<text x="{lx:.1}" y="{}">{}</text>"#, y + 20.0, esc(&label));
    }
    let _ = write!(o, "</svg>");
}

fn move_matrix(o: &mut String, s: &Summary) {
    if s.moves.is_empty() {
        let _ = write!(o, r#"<p class="note">No device moves.</p>"#);
        return;
    }
    // Rows: hubs devices leave; columns: hubs devices join; both in catalogue order.
    let order = |pick: &dyn Fn(&super::report::MoveRow) -> &str| -> Vec<String> {
        let set: BTreeSet<&str> = s.moves.iter().map(pick).collect();
        s.hubs
            .iter()
            .map(|h| h.host.clone())
            .filter(|h| set.contains(h.as_str()))
            .collect()
    };
    let rows = order(&|m| m.from.as_str());
    let cols = order(&|m| m.to.as_str());
    let max = s.moves.iter().map(|m| m.devices).max().unwrap_or(1).max(1) as f64;
    let (cell, left, top) = (22.0, 330.0, 230.0);
    let (w, h) = (
        left + cell * cols.len() as f64 + 190.0,
        top + cell * rows.len() as f64 + 20.0,
    );
    let _ = write!(
        o,
        r#"<p class="note">Rows: the hub devices leave. Columns: the hub they go to. Darker: more devices (log scale).</p>
<svg id="move-matrix" role="img" aria-label="move matrix" width="100%" style="max-width:{w}px" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">"#
    );
    for (j, hub) in cols.iter().enumerate() {
        let (cx, cy) = (left + j as f64 * cell + 15.0, top - 6.0);
        let _ = write!(
            o,
            r#"<text x="{cx}" y="{cy}" transform="rotate(-60 {cx} {cy})">{}</text>"#,
            esc(hub)
        );
    }
    for (i, hub) in rows.iter().enumerate() {
        let p = i as f64 * cell;
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            top + p + 15.0,
            esc(hub)
        );
        for j in 0..cols.len() {
            let _ = write!(
                o,
                r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#f6f8fa" stroke="#d0d7de" stroke-width="0.5"/>"##,
                left + j as f64 * cell,
                top + p,
                cell,
                cell
            );
        }
    }
    for m in &s.moves {
        let (Some(i), Some(j)) = (
            rows.iter().position(|r| *r == m.from),
            cols.iter().position(|c| *c == m.to),
        ) else {
            continue;
        };
        let level = ((m.devices as f64).ln_1p() / max.ln_1p()).clamp(0.08, 1.0);
        let _ = write!(
            o,
            r#"<rect class="move" x="{}" y="{}" width="{}" height="{}" fill="rgb(207,34,46)" fill-opacity="{level:.3}"><title>{} → {}: {}</title></rect>"#,
            left + j as f64 * cell,
            top + i as f64 * cell,
            cell,
            cell,
            esc(&m.from),
            esc(&m.to),
            group(m.devices)
        );
    }
    let _ = write!(o, "</svg>");
}

fn rule_chart(o: &mut String, s: &Summary) {
    let mut rules: Vec<&str> = s.assignments_per_rule.iter().map(|r| r.rule.as_str()).collect();
    for r in s
        .moves_per_rule
        .iter()
        .map(|r| r.rule.as_str())
        .chain(s.rejections.iter().map(|r| r.rule.as_str()))
    {
        if !rules.contains(&r) {
            rules.push(r);
        }
    }
    let count =
        |list: &[super::report::RuleCount], rule: &str| list.iter().find(|r| r.rule == rule).map_or(0, |r| r.devices);
    let rejected = |rule: &str| {
        s.rejections
            .iter()
            .filter(|r| r.rule == rule)
            .map(|r| r.devices)
            .sum::<u64>()
    };
    let max = rules
        .iter()
        .flat_map(|r| {
            [
                count(&s.assignments_per_rule, r),
                count(&s.moves_per_rule, r),
                rejected(r),
            ]
        })
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (label_w, bar_w, row_h) = (230.0, 700.0, 34.0);
    let height = 20.0 + row_h * rules.len() as f64;
    let _ = write!(
        o,
        r#"<p class="legend"><span><i class="sw" style="background:{AFTER}"></i>assigned</span><span><i class="sw" style="background:#bf8700"></i>moved</span><span><i class="sw" style="background:{OVER}"></i>rejected</span></p>
<svg id="per-rule" role="img" aria-label="per rule" width="100%" style="max-width:{w}px" viewBox="0 0 {w} {height}" xmlns="http://www.w3.org/2000/svg">"#,
        w = label_w + bar_w + 120.0
    );
    for (i, rule) in rules.iter().enumerate() {
        let y = 10.0 + row_h * i as f64;
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 17.0,
            esc(rule)
        );
        for (k, (n, colour)) in [
            (count(&s.assignments_per_rule, rule), AFTER),
            (count(&s.moves_per_rule, rule), "#bf8700"),
            (rejected(rule), OVER),
        ]
        .into_iter()
        .enumerate()
        {
            let by = y + 1.0 + 9.0 * k as f64;
            let _ = write!(
                o,
                r#"<rect x="{label_w}" y="{by}" width="{:.1}" height="8" fill="{colour}"><title>{}: {}</title></rect>"#,
                bar_w * n as f64 / max,
                esc(rule),
                group(n)
            );
            if n > 0 {
                let _ = write!(
                    o,
                    r#"<text x="{}" y="{}">{}</text>"#,
                    label_w + bar_w * n as f64 / max + 5.0,
                    by + 8.0,
                    group(n)
                );
            }
        }
    }
    let _ = write!(o, "</svg>");
}
