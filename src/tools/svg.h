/*
 * svg.h - a small SVG chart writer: one or more panels side by side, each a line
 * chart or scatter plot with a frame, grid, "nice" ticks, axis labels and a
 * title, plus one legend under the panels and a chart title above them.
 * Used by `nnopt plot` (loss and accuracy curves). Internal to libnnopt.
 *
 * Everything is described by plain structs that the caller owns; nn_svg_write
 * only reads them. Text is escaped for XML (invalid UTF-8 and control bytes
 * become '?'), numbers are written in the C locale, and non-finite data points
 * are skipped (a line is broken there).
 */
#ifndef NN_SVG_H
#define NN_SVG_H

#include "nnopt.h"

#include <stdio.h>

/* Colour index for neutral (dark grey) series and legend keys; colours >= 0
 * index a 10-colour palette and wrap around. */
#define NN_SVG_GREY (-1)

typedef enum { NN_SVG_SOLID = 0, NN_SVG_DASHED, NN_SVG_DOTTED } nn_svg_dash;

/* One data series. A line series (line = 1) with a single point gets a marker
 * anyway, so it stays visible. */
typedef struct {
    const double *x;             /* (n) data coordinates */
    const double *y;             /* (n) */
    int n;
    int color;                   /* palette index, or NN_SVG_GREY */
    nn_svg_dash dash;            /* line style when line = 1 */
    int line;                    /* join the points with a polyline */
    int marker;                  /* draw a filled circle at every point */
    const char *const *labels;   /* (n) text beside each point (scatter), or NULL */
} nn_svg_series;

/* One panel. Axis ranges come from the data (rounded out to nice ticks) unless
 * lo < hi is given; data outside a fixed range is clipped. */
typedef struct {
    const char *title;           /* above the panel, or NULL */
    const char *xlabel, *ylabel; /* or NULL */
    const nn_svg_series *series; /* (nseries) */
    int nseries;
    int x_integer;               /* x ticks on whole numbers only (epochs, counts) */
    double x_lo, x_hi;           /* fixed x range when x_lo < x_hi */
    double y_lo, y_hi;           /* fixed y range when y_lo < y_hi */
} nn_svg_panel;

/* One legend entry: a line sample and/or a marker, then the label. */
typedef struct {
    const char *label;
    int color;                   /* palette index, or NN_SVG_GREY */
    nn_svg_dash dash;
    int line;
    int marker;
} nn_svg_legend;

typedef struct {
    const char *title;           /* centred above the panels, or NULL */
    const nn_svg_panel *panels;  /* (npanels) drawn left to right, npanels >= 1 */
    int npanels;
    const nn_svg_legend *legend; /* (nlegend) under the panels, wrapped into rows */
    int nlegend;
    int panel_width;             /* pixels per panel including its axes; 0: 480 */
    int panel_height;            /* 0: 340 */
} nn_svg_chart;

/* The palette colour for an index ("#rrggbb", static storage). */
const char *nn_svg_color(int color);

/* Writes the chart as one standalone SVG document to f; name is used in error
 * messages. NN_EINVAL for a malformed description (no panels, n < 0, NULL data),
 * NN_EIO if writing fails. */
nn_status nn_svg_write_file(nn_ctx *ctx, FILE *f, const char *name, const nn_svg_chart *chart);

/* Writes the chart to path (created or truncated). On failure the message names
 * path and the partly written file is removed. */
nn_status nn_svg_write(nn_ctx *ctx, const char *path, const nn_svg_chart *chart);

/* Length of the valid UTF-8 sequence at s that is an XML 1.0 character, or 0
 * (overlong forms, surrogates, U+FFFE/U+FFFF and C0 controls other than tab,
 * newline and carriage return are not): what the writer copies, and what
 * other writers of XML or HTML text escape the same way. */
int nn_svg_char_len(const unsigned char *s);

#endif /* NN_SVG_H */
