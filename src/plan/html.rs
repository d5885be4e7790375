//! The plan as one self-contained HTML file (inline CSS and SVG, no scripts, no fetches): the timeline of
//! devices moved per minute by the plan and all at once, the throttled requests of all at once, the waves
//! as bands, the binding limit and every limit, the per-hub breakdown.

use std::fmt::Write as _;

use super::{Plan, duration_words};
use crate::simulate::html::{esc, page_start};
use crate::simulate::report::group;

/// The report.
pub fn render(p: &Plan) -> String {
    let title = format!("dps-allocator plan: {} movers", group(p.movers));
    let mut o = String::with_capacity(32 * 1024);
    o.push_str(&page_start(
        &title,
        "table{border-collapse:collapse} td,th{padding:.2rem .8rem .2rem 0;text-align:left} td.n{text-align:right}",
    ));
    let _ = write!(
        o,
        r#"<table>
<tr><td>plan</td><td>{dur} at {rate} devices/min ({per} started per minute)</td></tr>
<tr><td>binding limit</td><td><b>{bind}</b></td></tr>
<tr><td>all at once</td><td>{aao} ({thr} throttled requests, peak {peak} attempts/min)</td></tr>
<tr><td>background</td><td>{bg} registrations/min from devices that re-provision on restart</td></tr>
</table>
"#,
        dur = duration_words(p.duration_s),
        rate = group(p.rate_per_min.round() as u64),
        per = group(p.per_minute),
        bind = esc(&p.binding_limit),
        aao = duration_words(p.all_at_once.duration_s),
        thr = group(p.all_at_once.throttled),
        peak = group(p.all_at_once.peak_per_min),
        bg = group(p.background_per_min.round() as u64),
    );
    let _ = write!(o, "<h2>Timeline</h2>");
    timeline(&mut o, p);
    let _ = write!(o, "<h2>Limits</h2><table><tr><th>limit</th><th>devices/min</th></tr>");
    for l in &p.limits {
        let mark = if l.name == p.binding_limit { " (binds)" } else { "" };
        let _ = write!(
            o,
            "<tr><td>{}{mark}</td><td class=\"n\">{}</td></tr>",
            esc(&l.name),
            group(l.per_min.round() as u64)
        );
    }
    let _ = write!(
        o,
        "</table><h2>Waves</h2><table><tr><th>wave</th><th>devices</th><th>from</th><th>to</th></tr>"
    );
    for w in &p.waves {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            w.wave,
            group(w.devices),
            duration_words(w.start_s as f64),
            duration_words(w.end_s as f64)
        );
    }
    let _ = write!(
        o,
        "</table><h2>Hubs</h2><table id=\"hubs\"><tr><th>hub</th><th>leaving</th><th>arriving</th><th>trigger limit/min</th><th>connect limit/min</th></tr>"
    );
    for h in &p.hubs {
        let lim = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| group(x.round() as u64));
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&h.hub),
            group(h.leaving),
            group(h.arriving),
            lim(h.trigger_limit_per_min),
            lim(h.connect_limit_per_min)
        );
    }
    let _ = writeln!(
        o,
        "</table><p class=\"note\">All at once assumes DPS admits the same effective rate, answers the rest 429 with Retry-After {} s, and devices retry after it with up to {} s of jitter.</p></body></html>",
        super::RETRY_AFTER_S,
        super::RETRY_JITTER_S
    );
    o
}

/// The timeline: devices moved so far (plan and all at once), then throttled requests per minute, both
/// with the waves as bands.
fn timeline(o: &mut String, p: &Plan) {
    let cumulative = |v: &[u64]| -> Vec<u64> {
        v.iter()
            .scan(0u64, |acc, x| {
                *acc += x;
                Some(*acc)
            })
            .collect()
    };
    let minutes = p.plan_per_min.len().max(p.all_at_once.done_per_min.len()).max(1);
    chart(
        o,
        "moved",
        p,
        minutes,
        &[
            (&cumulative(&p.plan_per_min), "#0969da", "plan: devices moved so far"),
            (
                &cumulative(&p.all_at_once.done_per_min),
                "#bf8700",
                "all at once: devices moved so far",
            ),
        ],
    );
    chart(
        o,
        "throttled",
        p,
        minutes,
        &[(
            &p.all_at_once.throttled_per_min,
            "#cf222e",
            "all at once: requests DPS throttled (429) per minute; the plan: none",
        )],
    );
}

type Series<'a> = (&'a [u64], &'a str, &'a str);

fn chart(o: &mut String, id: &str, p: &Plan, minutes: usize, series: &[Series<'_>]) {
    let (w, h, left, bottom) = (1100.0, 260.0, 70.0, 30.0);
    let peak = series
        .iter()
        .flat_map(|(v, _, _)| v.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |m: f64| left + m / minutes as f64 * (w - left - 10.0);
    let y = |v: f64| h - bottom - v / peak * (h - bottom - 10.0);
    let _ = write!(o, "<div class=\"legend\">");
    for (_, colour, label) in series {
        let _ = write!(
            o,
            "<span><i class=\"sw\" style=\"background:{colour}\"></i>{}</span>",
            esc(label)
        );
    }
    let _ = write!(
        o,
        r#"</div><svg id="{id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#
    );
    for (i, wv) in p.waves.iter().enumerate() {
        let (a, b) = (wv.start_s as f64 / 60.0, wv.end_s as f64 / 60.0 + 1.0);
        let fill = if i % 2 == 0 { "#f6f8fa" } else { "#eaeef2" };
        let _ = write!(
            o,
            r#"<rect x="{:.1}" y="10" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="22">wave {}</text>"#,
            x(a),
            (x(b) - x(a)).max(1.0),
            h - bottom - 10.0,
            x(a) + 3.0,
            wv.wave
        );
    }
    for (values, colour, _) in series {
        let pts: Vec<String> = std::iter::once(format!("{:.1},{:.1}", x(0.0), y(0.0)))
            .chain(
                values
                    .iter()
                    .enumerate()
                    .map(|(m, v)| format!("{:.1},{:.1}", x(m as f64 + 1.0), y(*v as f64))),
            )
            .collect();
        let _ = write!(
            o,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
    }
    let _ = write!(
        o,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#57606a"/><text x="{left}" y="{t}">0</text><text x="{r:.1}" y="{t}" text-anchor="end">{end}</text><text x="4" y="20">{top}</text></svg>"##,
        b = h - bottom,
        r = w - 10.0,
        t = h - 10.0,
        end = duration_words(minutes as f64 * 60.0),
        top = group(peak as u64)
    );
}
