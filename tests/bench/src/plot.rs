//! The ratio plot: one row per scenario, one bar per peer, showing how many times better
//! the reference is (log scale, 1 = parity, right of the line = the reference is better).
//! SVG through plotters: text stays `<text>` elements, so no font files are needed.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::Report;

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1d, 0x63, 0xed),
    RGBColor(0x89, 0x2c, 0xa0),
    RGBColor(0xe0, 0x7a, 0x10),
    RGBColor(0x2a, 0x9d, 0x3f),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0x55, 0x55, 0x55),
];

/// One bar: (row label, peer, advantage).
pub fn bars(report: &Report) -> Vec<(String, String, f64)> {
    let mut v = Vec::new();
    for g in &report.groups {
        for r in &g.results {
            for c in &r.comparisons {
                if c.advantage.is_finite() && c.advantage > 0.0 {
                    let row = if g.reference == "berthd" {
                        r.meta.name.clone()
                    } else {
                        format!("{} ({} vs)", r.meta.name, g.reference)
                    };
                    v.push((row, c.peer.clone(), c.advantage));
                }
            }
        }
    }
    v
}

/// Tick labels only at 1, 2 and 5 times a power of ten (a log axis has many ticks).
pub fn tick_label(x: f64) -> String {
    if x <= 0.0 {
        return String::new();
    }
    let m = x / 10f64.powf(x.log10().floor());
    if [1.0, 2.0, 5.0, 10.0].iter().any(|k| (m - k).abs() < 0.02) {
        if x >= 1.0 {
            format!("{x:.0}x")
        } else {
            format!("{x}x")
        }
    } else {
        String::new()
    }
}

/// Render the plot; an SVG document.
pub fn ratios_svg(report: &Report, title: &str) -> Result<String, String> {
    let bars = bars(report);
    let mut rows: Vec<String> = Vec::new();
    let mut peers: Vec<String> = Vec::new();
    for (row, peer, _) in &bars {
        if !rows.contains(row) {
            rows.push(row.clone());
        }
        if !peers.contains(peer) {
            peers.push(peer.clone());
        }
    }
    let n = rows.len().max(1);
    let height = 130 + 46 * n as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        let e = |x: DrawingAreaErrorKind<_>| format!("plot: {x:?}");
        root.fill(&WHITE).map_err(e)?;
        let (lo, hi) = bars.iter().fold((0.5f64, 2.0f64), |(lo, hi), b| {
            (lo.min(b.2 / 1.6), hi.max(b.2 * 1.6))
        });
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(250)
            // The strip below row n-1 holds the legend.
            .build_cartesian_2d((lo..hi).log_scale(), -0.9f64..n as f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("times better (time, memory: peer / reference; throughput: reference / peer)")
            .x_labels(30)
            .x_label_formatter(&|x| tick_label(*x))
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(e)?;
        let band = 0.8 / peers.len().max(1) as f64;
        for (pi, peer) in peers.iter().enumerate() {
            let color = PALETTE[pi % PALETTE.len()];
            let rects: Vec<_> = bars
                .iter()
                .filter(|b| &b.1 == peer)
                .map(|(row, _, adv)| {
                    let ri = rows.iter().position(|r| r == row).unwrap_or(0);
                    // Row 0 at the top.
                    let top = (n - ri) as f64 - 0.1 - band * pi as f64;
                    (top, *adv)
                })
                .collect();
            chart
                .draw_series(rects.iter().map(|(top, adv)| {
                    Rectangle::new([(1.0, *top), (*adv, top - band * 0.9)], color.filled())
                }))
                .map_err(e)?
                .label(format!("vs {peer}"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            chart
                .draw_series(rects.iter().map(|(top, adv)| {
                    Text::new(
                        format!(" {adv:.2}x"),
                        (adv.max(1.0), top - band * 0.45),
                        ("sans-serif", 13)
                            .into_font()
                            .into_text_style(&root)
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )
                }))
                .map_err(e)?;
        }
        chart
            .draw_series(LineSeries::new(vec![(1.0, -0.9), (1.0, n as f64)], BLACK))
            .map_err(e)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        for (ri, row) in rows.iter().enumerate() {
            let (_, py) = chart.backend_coord(&(lo, (n - ri) as f64 - 0.5));
            root.draw(&Text::new(
                row.clone(),
                (12, py),
                ("sans-serif", 15)
                    .into_font()
                    .into_text_style(&root)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e)?;
        }
        if bars.is_empty() {
            root.draw(&Text::new(
                "no ratios: the reference or every peer is missing",
                (300, 60),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::report::{Group, LeakCheck};
    use crate::scenario::tests::{fake, Recorder};
    use crate::scenario::{measure, Slot};

    #[test]
    fn ticks() {
        assert_eq!(tick_label(1.0), "1x");
        assert_eq!(tick_label(20.0), "20x");
        assert_eq!(tick_label(0.5), "0.5x");
        assert_eq!(tick_label(3.0), "");
        assert_eq!(tick_label(0.0), "");
    }

    #[test]
    fn svg_has_a_bar_per_comparison() {
        let a = fake("berthd", &[0.1]);
        let b = fake("dockerd", &[0.4]);
        let c = fake("podman", &[0.05]);
        let r = measure(
            &Recorder::new(1, 0),
            &[Slot::Ready(&a), Slot::Ready(&b), Slot::Ready(&c)],
            "berthd",
        );
        let report = Report {
            started: String::new(),
            finished: String::new(),
            machine: Machine::example(),
            versions: Default::default(),
            setup: vec![],
            leak_check: LeakCheck::default(),
            groups: vec![Group {
                title: "g".into(),
                description: String::new(),
                reference: "berthd".into(),
                subjects: vec!["berthd".into(), "dockerd".into(), "podman".into()],
                results: vec![r],
            }],
        };
        let b = bars(&report);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].1, "dockerd");
        assert!((b[0].2 - 4.0).abs() < 1e-9);
        assert!((b[1].2 - 0.5).abs() < 1e-9);
        let svg = ratios_svg(&report, "berth-bench").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("4.00x") && svg.contains("0.50x"));
        assert!(svg.contains(">\nfake\n<"), "{svg}");
        assert!(svg.contains("vs podman"));
        let empty = Report {
            groups: vec![],
            ..report
        };
        assert!(ratios_svg(&empty, "x").unwrap().contains("no ratios"));
    }
}
