//! Line charts written as SVG (feature `plot`): accuracy against sparsity, sensitivity curves.
//!
//! A chart is plain data (title, axis labels, named series of points) until it is drawn, so
//! that any report can build one and tests can inspect it without parsing SVG. Drawing goes
//! through plotters' SVG backend, which needs no fonts: text stays text in the SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// Colours of the series, in order, repeating after the last (Okabe and Ito's palette, readable
/// with every common form of colour blindness).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

/// One named line of a [`LineChart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The name shown in the legend.
    pub name: String,
    /// The points, drawn in the order given.
    pub points: Vec<(f64, f64)>,
}

/// A chart of named lines with labelled axes and a legend.
///
/// ```
/// use shears::report::LineChart;
///
/// let chart = LineChart::new("Accuracy against sparsity")
///     .axes("sparsity", "accuracy (%)")
///     .series("magnitude", vec![(0.5, 92.0), (0.9, 89.5)])
///     .series("random", vec![(0.5, 80.0), (0.9, 40.0)]);
/// let svg = chart.to_svg()?;
/// assert!(svg.starts_with("<svg") && svg.contains("magnitude") && svg.contains("sparsity"));
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// The caption above the plot.
    pub title: String,
    /// The label of the horizontal axis.
    pub x_label: String,
    /// The label of the vertical axis.
    pub y_label: String,
    /// The lines, in legend order.
    pub series: Vec<Series>,
    /// Size in pixels (width, height).
    pub size: (u32, u32),
}

impl LineChart {
    /// An empty chart, 900 × 560 pixels, with unlabelled axes.
    pub fn new(title: impl Into<String>) -> Self {
        LineChart {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            size: (900, 560),
        }
    }

    /// Labels the axes.
    pub fn axes(mut self, x: impl Into<String>, y: impl Into<String>) -> Self {
        self.x_label = x.into();
        self.y_label = y.into();
        self
    }

    /// Adds a line.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }

    /// The chart as an SVG document.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the chart has no point or a point is not finite.
    pub fn to_svg(&self) -> Result<String> {
        let (x_range, y_range) = self.ranges()?;
        let mut svg = String::new();
        self.draw(
            SVGBackend::with_string(&mut svg, self.size),
            x_range,
            y_range,
        )
        .map_err(|e| Error::invalid("chart", e.to_string()))?;
        Ok(svg)
    }

    /// Writes the chart as an SVG file, atomically.
    ///
    /// # Errors
    /// As [`LineChart::to_svg`], and [`Error::Io`] when the file cannot be written.
    pub fn save_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_text(path, &self.to_svg()?)
    }

    /// The axis ranges: the data's extent with a twentieth of margin on each side.
    fn ranges(&self) -> Result<(std::ops::Range<f64>, std::ops::Range<f64>)> {
        let points = || self.series.iter().flat_map(|s| s.points.iter().copied());
        if let Some((x, y)) = points().find(|(x, y)| !x.is_finite() || !y.is_finite()) {
            return Err(Error::invalid(
                "chart",
                format!("point ({x}, {y}) is not finite"),
            ));
        }
        let extent = |values: Vec<f64>| -> Option<std::ops::Range<f64>> {
            let lo = values.iter().copied().reduce(f64::min)?;
            let hi = values.iter().copied().reduce(f64::max)?;
            let margin = if hi > lo { (hi - lo) / 20.0 } else { 0.5 };
            Some(lo - margin..hi + margin)
        };
        let x = extent(points().map(|p| p.0).collect());
        let y = extent(points().map(|p| p.1).collect());
        x.zip(y)
            .ok_or_else(|| Error::invalid("chart", "it has no point to draw"))
    }

    fn draw<DB: DrawingBackend>(
        &self,
        backend: DB,
        x_range: std::ops::Range<f64>,
        y_range: std::ops::Range<f64>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + '_>>
    where
        DB::ErrorType: 'static,
    {
        let root = backend.into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        for (series, colour) in self.series.iter().zip(COLOURS.iter().cycle()) {
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(series.points.iter().copied(), style))?
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 4, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_axes_labels_legend_and_one_marker_per_point() {
        let svg = LineChart::new("t")
            .axes("x axis", "y axis")
            .series("first", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 0.5)])
            .series("second", vec![(0.5, 1.5)])
            .to_svg()
            .unwrap();
        for text in ["x axis", "y axis", "first", "second"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn empty_and_non_finite_charts_are_errors() {
        let err = LineChart::new("t").to_svg().unwrap_err();
        assert!(err.to_string().contains("no point"), "{err}");
        let err = LineChart::new("t")
            .series("s", vec![(0.0, f64::NAN)])
            .to_svg()
            .unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
    }
}
