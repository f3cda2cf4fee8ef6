//! `--report FILE.html`: one self-contained HTML file (inline SVG, no
//! script, nothing fetched) with the latency percentile distribution on a
//! log percentile axis (as HdrHistogram's plotter draws it) and the
//! throughput second by second, one line per run: a single run, the
//! contenders of `--compare`, or the rates of `--rates`.

use std::fmt::Write as _;

use super::report::{fmt_duration, RunResult};

/// The line colours, in order.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
/// The deepest percentile drawn: 99.999% (five nines).
const NINES: f64 = 5.0;
const W: f64 = 760.0;
const H: f64 = 320.0;
const PAD: f64 = 56.0;

/// The report for `runs`, each named (a contender, a rate, or the run).
pub fn report(title: &str, runs: &[(String, &RunResult)]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font:14px sans-serif;margin:24px}}table{{border-collapse:collapse}}\
         td,th{{padding:2px 10px;text-align:right}}th{{border-bottom:1px solid #999}}</style>\
         </head><body><h1>{t}</h1>",
        t = escape(title)
    );
    out.push_str("<h2>Latency by percentile</h2>");
    out.push_str(&percentile_plot(runs));
    out.push_str("<h2>Throughput over time</h2>");
    out.push_str(&throughput_plot(runs));
    out.push_str("<h2>Figures</h2><table><tr><th style=\"text-align:left\">run</th><th>ops/s</th>\
                  <th>p50</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>errors</th></tr>");
    for (name, r) in runs {
        let _ = write!(
            out,
            "<tr><td style=\"text-align:left\">{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            r.ops_per_sec(),
            fmt_duration(r.latency_at(0.5)),
            fmt_duration(r.latency_at(0.99)),
            fmt_duration(r.latency_at(0.999)),
            fmt_duration(r.latency_at(0.9999)),
            fmt_duration(std::time::Duration::from_nanos(r.latency.max())),
            r.errors + r.mismatches
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

/// Latency (µs) against percentile, the percentile axis logarithmic in
/// `1 / (1 - p)`: 0%, 90%, 99%, ... 99.999% equally spaced.
fn percentile_plot(runs: &[(String, &RunResult)]) -> String {
    let points: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, r)| {
            (0..=200)
                .map(|i| {
                    let x = NINES * f64::from(i) / 200.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, r.latency_at(q).as_secs_f64() * 1e6)
                })
                .collect()
        })
        .collect();
    let ticks: Vec<(f64, String)> = (0..=NINES as u32)
        .map(|n| {
            let label = match n {
                0 => "0%".to_string(),
                n => format!("{}%", 100.0 - 100.0 * 10f64.powi(-(n as i32))),
            };
            (f64::from(n), label)
        })
        .collect();
    plot(runs, &points, NINES, &ticks, "latency (µs)")
}

/// Operations per second against seconds into the measured period.
fn throughput_plot(runs: &[(String, &RunResult)]) -> String {
    let points: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|(_, r)| {
            r.throughput
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 + 1.0, *v))
                .collect()
        })
        .collect();
    let x_max = points.iter().map(Vec::len).max().unwrap_or(1).max(1) as f64;
    let ticks: Vec<(f64, String)> = (0..=x_max as u32)
        .map(|s| (f64::from(s), format!("{s} s")))
        .collect();
    plot(runs, &points, x_max, &ticks, "operations/s")
}

/// An SVG line plot: one polyline per run, x from 0 to `x_max` with
/// `ticks`, y from 0 to the largest value.
fn plot(
    runs: &[(String, &RunResult)],
    points: &[Vec<(f64, f64)>],
    x_max: f64,
    ticks: &[(f64, String)],
    y_label: &str,
) -> String {
    let y_max = points
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let sx = |x: f64| PAD + (W - 2.0 * PAD) * x / x_max;
    let sy = |y: f64| H - PAD - (H - 2.0 * PAD) * y / y_max;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-size=\"11\">"
    );
    // Axes.
    let _ = write!(
        s,
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#333\"/>\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#333\"/>",
        b = H - PAD,
        r = W - PAD
    );
    for (x, label) in ticks {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            sx(*x),
            H - PAD + 16.0,
            escape(label)
        );
    }
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{y:.0}</text>\
             <line x1=\"{PAD}\" y1=\"{yy:.1}\" x2=\"{r}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>",
            PAD - 4.0,
            sy(y) + 4.0,
            yy = sy(y),
            r = W - PAD
        );
    }
    let _ = write!(
        s,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
    for (k, line) in points.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = line
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        let name = runs.get(k).map_or("", |(n, _)| n.as_str());
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            PAD + 10.0,
            PAD + 14.0 * k as f64 - 10.0,
            PAD + 24.0,
            PAD + 14.0 * k as f64,
            escape(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
