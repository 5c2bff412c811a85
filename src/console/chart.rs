//! Server-made SVG charts: submissions per time bucket, stacked by outcome. No script, no
//! library: bars are rectangles, colours come from the stylesheet (classes `applied`, `stale`,
//! `dead`), and each bar's `<title>` is its tooltip.

use maud::{html, Markup};

use super::queries::Bucket;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 140.0;
/// Room for the axis labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;

/// One bar: its x, its tooltip, and its segments (class, y, height), bottom up.
type Bar = (f64, String, Vec<(&'static str, f64, f64)>);

/// A stacked bar chart of `buckets`, labelled with `label(bucket)` every `label_every` bars.
pub fn stacked(title: &str, buckets: &[Bucket], label: impl Fn(&Bucket) -> String, label_every: usize) -> Markup {
    let max = buckets.iter().map(|b| b.applied + b.stale + b.dead).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM;
    let slot = plot_w / buckets.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let y = |v: i64| plot_h - (v as f64 / max as f64) * plot_h;
    let total: i64 = buckets.iter().map(|b| b.applied + b.stale + b.dead).sum();
    let bars: Vec<Bar> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut base = 0;
            let mut segments = Vec::new();
            for (class, v) in [("applied", b.applied), ("stale", b.stale), ("dead", b.dead)] {
                if v > 0 {
                    segments.push((class, y(base + v), y(base) - y(base + v)));
                }
                base += v;
            }
            let tip = format!("{}: applied {}, stale {}, dead {}", label(b), b.applied, b.stale, b.dead);
            (LEFT + i as f64 * slot, tip, segments)
        })
        .collect();
    html! {
        figure.chart {
            figcaption { (title) " — " (total) " in all, peak " (max) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) {}
                text.tick x=(LEFT - 4.0) y="10" text-anchor="end" { (max) }
                text.tick x=(LEFT - 4.0) y=(plot_h) text-anchor="end" { "0" }
                @for (i, (x, tip, segments)) in bars.iter().enumerate() {
                    g {
                        title { (tip) }
                        @for (class, top, height) in segments {
                            rect class=(class) x=(format!("{x:.1}")) y=(format!("{top:.1}"))
                                width=(format!("{bar:.1}")) height=(format!("{height:.1}")) {}
                        }
                    }
                    @if label_every > 0 && i % label_every == 0 {
                        text.tick x=(format!("{x:.1}")) y=(HEIGHT - 4.0) { (label(&buckets[i])) }
                    }
                }
            }
            p.legend {
                span.key.applied {} "applied " span.key.stale {} "stale " span.key.dead {} "dead"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_by_outcome_and_an_empty_chart_draws_no_bar() {
        let b = |applied, stale, dead| Bucket { start: None, applied, stale, dead };
        let svg = stacked("t", &[b(3, 1, 0), b(0, 0, 0), b(0, 0, 2)], |_| "x".into(), 0).into_string();
        assert_eq!(svg.matches("<rect class=\"applied\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"stale\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"dead\"").count(), 1);
        assert!(svg.contains("6 in all, peak 4"), "{svg}");
        let empty = stacked("t", &[b(0, 0, 0)], |_| "x".into(), 0).into_string();
        assert!(!empty.contains("<rect"));
    }
}
