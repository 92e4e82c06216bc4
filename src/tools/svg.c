/* svg.c - the SVG chart writer behind svg.h: nice-tick axes, panels side by
 * side, polylines and markers clipped to the plot area, a wrapped legend. */
#include "tools/svg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FONT "sans-serif"
#define CHAR_W 6.8      /* estimated average glyph width at font-size 12, px */
#define MAX_TICKS 40
#define TITLE_H 36.0    /* band above the panels when the chart has a title */
#define LEGEND_ROW 22.0

/* matplotlib's tab10: distinct, readable on white, friendly to most colour-blindness */
static const char *const palette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

const char *nn_svg_color(int color) {
    if (color < 0) return "#444444";
    return palette[color % 10];
}

static const char *dasharray(nn_svg_dash d) {
    switch (d) {
    case NN_SVG_DASHED: return " stroke-dasharray=\"8,5\"";
    /* round caps turn the short dashes into dots */
    case NN_SVG_DOTTED: return " stroke-dasharray=\"0.5,5\" stroke-linecap=\"round\"";
    default: return "";
    }
}

/* Length of the valid UTF-8 sequence that starts at s and is an XML 1.0 Char,
 * or 0. Rejects overlong forms, surrogates, U+FFFE/U+FFFF and C0 controls other
 * than tab, newline and carriage return. */
int nn_svg_char_len(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80) return (c >= 0x20 || c == '\t' || c == '\n' || c == '\r') ? 1 : 0;
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (c == 0xEF && s[1] == 0xBF && (s[2] == 0xBE || s[2] == 0xBF)) return 0;
    return n;
}

/* Writes s as XML character data / attribute text. */
static void put_text(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        int n = nn_svg_char_len(p);
        if (n == 0) {
            fputc('?', f);
            p++;
            continue;
        }
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        case '\n': case '\r': case '\t': fputc(' ', f); break;
        default: fwrite(p, 1, (size_t)n, f);
        }
        p += n;
    }
}

/* Estimated width in pixels of s at font size px (code points x average glyph). */
static double text_width(const char *s, double px) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
        if ((*p & 0xC0) != 0x80) n++;
    return n * CHAR_W * px / 12.0;
}

/* ------------------------------------------------------------------ axes */

typedef struct {
    double lo, hi, step;    /* tick range */
    double vlo, vhi;        /* visible range: the tick range plus a small margin */
    int decimals;           /* for tick labels */
    double ticks[MAX_TICKS];
    int nticks;
} axis;

/* 1, 2 or 5 times a power of ten, near span / 5 (5 to 8 ticks). */
static double nice_step(double span) {
    double rough = span / 5.0;
    if (!(rough > 0) || !isfinite(rough)) return 1.0;
    double mag = pow(10.0, floor(log10(rough)));
    double f = rough / mag;
    return (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
}

/* Range and ticks from the data range [dmin, dmax] (dmin > dmax: no data), or
 * the fixed range [flo, fhi] when flo < fhi. pad: fraction of the span added on
 * both sides before rounding out (scatter plots, so markers clear the frame). */
static void make_axis(axis *a, double dmin, double dmax, int integer, double flo, double fhi,
                      double pad) {
    if (flo < fhi) {
        a->lo = flo;
        a->hi = fhi;
        a->step = nice_step(fhi - flo);
        if (integer && a->step < 1.0) a->step = 1.0;
    } else {
        if (dmin > dmax) dmin = 0.0, dmax = 1.0;
        if (dmin == dmax) {
            double d = dmin != 0.0 ? fabs(dmin) * 0.05 : 1.0;
            dmin -= d;
            dmax += d;
        } else {
            double d = (dmax - dmin) * pad;
            dmin -= d;
            dmax += d;
        }
        a->step = nice_step(dmax - dmin);
        if (integer && a->step < 1.0) a->step = 1.0;
        a->lo = floor(dmin / a->step) * a->step;
        a->hi = ceil(dmax / a->step) * a->step;
        if (!(a->hi > a->lo)) a->hi = a->lo + a->step;
    }
    /* keep lines and markers at the extreme ticks off the frame */
    double margin = (flo < fhi) ? 0.0 : (a->hi - a->lo) * 0.03;
    a->vlo = a->lo - margin;
    a->vhi = a->hi + margin;
    a->decimals = a->step >= 1.0 ? 0 : (int)ceil(-log10(a->step) - 1e-9);
    a->nticks = 0;
    double eps = a->step * 1e-9;
    for (double k = ceil((a->lo - eps) / a->step); a->nticks < MAX_TICKS; k++) {
        double v = k * a->step;
        if (v > a->hi + eps) break;
        if (fabs(v) < eps) v = 0.0; /* no "-0" labels */
        a->ticks[a->nticks++] = v;
    }
}

static void tick_label(char *buf, size_t size, const axis *a, double v) {
    double m = fabs(v);
    if (m >= 1e6 || (m > 0 && m < 1e-4)) snprintf(buf, size, "%g", v);
    else snprintf(buf, size, "%.*f", a->decimals, v);
}

/* ------------------------------------------------------------------ drawing */

typedef struct {
    double x0, y0, w, h; /* plot area in chart pixels */
    axis ax, ay;
} frame;

static double px(const frame *fr, double v) {
    return fr->x0 + (v - fr->ax.vlo) / (fr->ax.vhi - fr->ax.vlo) * fr->w;
}
static double py(const frame *fr, double v) {
    return fr->y0 + fr->h - (v - fr->ay.vlo) / (fr->ay.vhi - fr->ay.vlo) * fr->h;
}

static void draw_marker(FILE *f, double x, double y, const char *color) {
    fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\" stroke=\"white\" "
               "stroke-width=\"1\"/>\n", x, y, color);
}

static void draw_series(FILE *f, const frame *fr, const nn_svg_series *s) {
    const char *color = nn_svg_color(s->color);
    if (s->line) {
        /* one polyline per run of finite points; non-finite points break it */
        int open = 0, finite = 0;
        for (int i = 0; i < s->n; i++) {
            int ok = isfinite(s->x[i]) && isfinite(s->y[i]);
            finite += ok;
            if (ok && !open) {
                fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                           "stroke-linejoin=\"round\"%s points=\"", color, dasharray(s->dash));
                open = 1;
            } else if (ok)
                fputc(' ', f);
            if (ok) fprintf(f, "%.2f,%.2f", px(fr, s->x[i]), py(fr, s->y[i]));
            if (open && (!ok || i == s->n - 1)) {
                fputs("\"/>\n", f);
                open = 0;
            }
        }
        if (finite == 1 && !s->marker)
            for (int i = 0; i < s->n; i++)
                if (isfinite(s->x[i]) && isfinite(s->y[i]))
                    draw_marker(f, px(fr, s->x[i]), py(fr, s->y[i]), color);
    }
    for (int i = 0; i < s->n; i++) {
        if (!isfinite(s->x[i]) || !isfinite(s->y[i])) continue;
        double x = px(fr, s->x[i]), y = py(fr, s->y[i]);
        if (s->marker) draw_marker(f, x, y, color);
        if (s->labels && s->labels[i]) {
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"#333333\">", x + 6,
                    y - 6);
            put_text(f, s->labels[i]);
            fputs("</text>\n", f);
        }
    }
}

/* Data range of a panel's series along x (which = 0) or y (which = 1). */
static void data_range(const nn_svg_panel *p, int which, double *mn, double *mx) {
    *mn = INFINITY;
    *mx = -INFINITY;
    for (int k = 0; k < p->nseries; k++) {
        const nn_svg_series *s = &p->series[k];
        for (int i = 0; i < s->n; i++) {
            if (!isfinite(s->x[i]) || !isfinite(s->y[i])) continue;
            double v = which ? s->y[i] : s->x[i];
            if (v < *mn) *mn = v;
            if (v > *mx) *mx = v;
        }
    }
}

static void draw_panel(FILE *f, const nn_svg_panel *p, int index, double left, double top,
                       double width, double height) {
    frame fr;
    double xmin, xmax, ymin, ymax;
    data_range(p, 0, &xmin, &xmax);
    data_range(p, 1, &ymin, &ymax);
    double pad = 0.0;
    for (int k = 0; k < p->nseries; k++)
        if (!p->series[k].line) pad = 0.05;
    make_axis(&fr.ax, xmin, xmax, p->x_integer, p->x_lo, p->x_hi, pad);
    make_axis(&fr.ay, ymin, ymax, 0, p->y_lo, p->y_hi, pad);

    /* the left margin fits the widest y tick label and the rotated y label */
    char buf[64];
    double widest = 0.0;
    for (int i = 0; i < fr.ay.nticks; i++) {
        tick_label(buf, sizeof buf, &fr.ay, fr.ay.ticks[i]);
        double w = text_width(buf, 11);
        if (w > widest) widest = w;
    }
    double margin_l = widest + 16 + (p->ylabel ? 22 : 0);
    fr.x0 = left + margin_l;
    fr.y0 = top + 30;
    fr.w = width - margin_l - 18;
    fr.h = height - 30 - (p->xlabel ? 48 : 30);

    if (p->title) {
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"13\" "
                   "font-weight=\"bold\">", fr.x0 + fr.w / 2, top + 20);
        put_text(f, p->title);
        fputs("</text>\n", f);
    }
    fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#fcfcfc\"/>\n",
            fr.x0, fr.y0, fr.w, fr.h);

    /* grid, tick marks and tick labels */
    fputs("<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n", f);
    for (int i = 0; i < fr.ax.nticks; i++) {
        double x = px(&fr, fr.ax.ticks[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", x, fr.y0, x,
                fr.y0 + fr.h);
    }
    for (int i = 0; i < fr.ay.nticks; i++) {
        double y = py(&fr, fr.ay.ticks[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", fr.x0, y,
                fr.x0 + fr.w, y);
    }
    fputs("</g>\n<g stroke=\"#444444\" stroke-width=\"1\">\n", f);
    for (int i = 0; i < fr.ax.nticks; i++) {
        double x = px(&fr, fr.ax.ticks[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", x, fr.y0 + fr.h,
                x, fr.y0 + fr.h + 4);
    }
    for (int i = 0; i < fr.ay.nticks; i++) {
        double y = py(&fr, fr.ay.ticks[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", fr.x0 - 4, y,
                fr.x0, y);
    }
    fputs("</g>\n<g font-size=\"11\" fill=\"#333333\">\n", f);
    for (int i = 0; i < fr.ax.nticks; i++) {
        tick_label(buf, sizeof buf, &fr.ax, fr.ax.ticks[i]);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n",
                px(&fr, fr.ax.ticks[i]), fr.y0 + fr.h + 17, buf);
    }
    for (int i = 0; i < fr.ay.nticks; i++) {
        tick_label(buf, sizeof buf, &fr.ay, fr.ay.ticks[i]);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", fr.x0 - 7,
                py(&fr, fr.ay.ticks[i]) + 4, buf);
    }
    fputs("</g>\n", f);
    if (p->xlabel) {
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"12\">",
                fr.x0 + fr.w / 2, fr.y0 + fr.h + 38);
        put_text(f, p->xlabel);
        fputs("</text>\n", f);
    }
    if (p->ylabel) {
        double x = left + 16, y = fr.y0 + fr.h / 2;
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"12\" "
                   "transform=\"rotate(-90 %.2f %.2f)\">", x, y, x, y);
        put_text(f, p->ylabel);
        fputs("</text>\n", f);
    }

    /* series, clipped to the plot area (only a fixed range can cut them) */
    fprintf(f, "<clipPath id=\"plot%d\"><rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
               "height=\"%.2f\"/></clipPath>\n<g clip-path=\"url(#plot%d)\">\n",
            index, fr.x0, fr.y0, fr.w, fr.h, index);
    for (int k = 0; k < p->nseries; k++) draw_series(f, &fr, &p->series[k]);
    fputs("</g>\n", f);
    fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
               "stroke=\"#444444\" stroke-width=\"1\"/>\n", fr.x0, fr.y0, fr.w, fr.h);
}

/* ------------------------------------------------------------------ legend */

#define SWATCH_W 30.0
static double legend_entry_width(const nn_svg_legend *e) {
    return SWATCH_W + 6 + text_width(e->label, 12) + 22;
}

/* Rows needed to fit the legend into width; row_start (rows + 1) gets the
 * first entry of each row, and the entry count as the end mark. */
static int legend_rows(const nn_svg_legend *l, int n, double width, int *row_start) {
    int rows = 0;
    double x = 0;
    for (int i = 0; i < n; i++) {
        double w = legend_entry_width(&l[i]);
        if (i == 0 || x + w > width) {
            if (row_start) row_start[rows] = i;
            rows++;
            x = 0;
        }
        x += w;
    }
    if (row_start) row_start[rows] = n;
    return rows;
}

static void draw_legend(FILE *f, const nn_svg_legend *l, double width, double top,
                        const int *row_start, int rows) {
    fputs("<g font-size=\"12\" fill=\"#222222\">\n", f);
    for (int r = 0; r < rows; r++) {
        double total = 0;
        for (int i = row_start[r]; i < row_start[r + 1]; i++) total += legend_entry_width(&l[i]);
        double x = (width - total + 22) / 2, y = top + r * LEGEND_ROW + LEGEND_ROW / 2;
        for (int i = row_start[r]; i < row_start[r + 1]; i++) {
            const char *color = nn_svg_color(l[i].color);
            if (l[i].line)
                fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
                           "stroke-width=\"2\"%s/>\n",
                        x, y, x + SWATCH_W, y, color, dasharray(l[i].dash));
            if (l[i].marker) draw_marker(f, x + SWATCH_W / 2, y, color);
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">", x + SWATCH_W + 6, y + 4);
            put_text(f, l[i].label);
            fputs("</text>\n", f);
            x += legend_entry_width(&l[i]);
        }
    }
    fputs("</g>\n", f);
}

/* ------------------------------------------------------------------ document */

static nn_status check_chart(nn_ctx *ctx, const char *name, const nn_svg_chart *c) {
    if (!c || c->npanels < 1 || !c->panels)
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: chart has no panels", name);
    if (c->nlegend < 0 || (c->nlegend > 0 && !c->legend))
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: legend has %d entries but no array", name,
                           c->nlegend);
    if ((c->panel_width && (c->panel_width < 160 || c->panel_width > 10000)) ||
        (c->panel_height && (c->panel_height < 120 || c->panel_height > 10000)))
        return nn_ctx_fail(ctx, NN_EINVAL, "%s: panel size %dx%d, expected 160..10000 x 120..10000",
                           name, c->panel_width, c->panel_height);
    for (int p = 0; p < c->npanels; p++) {
        const nn_svg_panel *pn = &c->panels[p];
        if (pn->nseries < 0 || (pn->nseries > 0 && !pn->series))
            return nn_ctx_fail(ctx, NN_EINVAL, "%s: panel %d has %d series but no array", name,
                               p + 1, pn->nseries);
        for (int k = 0; k < pn->nseries; k++) {
            const nn_svg_series *s = &pn->series[k];
            if (s->n < 0 || (s->n > 0 && (!s->x || !s->y)))
                return nn_ctx_fail(ctx, NN_EINVAL, "%s: panel %d series %d: %d points but no data",
                                   name, p + 1, k + 1, s->n);
        }
    }
    return NN_OK;
}

nn_status nn_svg_write_file(nn_ctx *ctx, FILE *f, const char *name, const nn_svg_chart *c) {
    nn_status st = check_chart(ctx, name, c);
    if (st) return st;
    double pw = c->panel_width ? c->panel_width : 480;
    double ph = c->panel_height ? c->panel_height : 340;
    double width = pw * c->npanels + 20;
    double title_h = c->title ? TITLE_H : 8.0;
    int rows = legend_rows(c->legend, c->nlegend, width - 40, NULL);
    int *row_start = malloc((size_t)(rows + 1) * sizeof *row_start);
    if (!row_start) return nn_ctx_fail(ctx, NN_ENOMEM, "%s: out of memory for the legend", name);
    legend_rows(c->legend, c->nlegend, width - 40, row_start);
    double height = title_h + ph + (rows ? rows * LEGEND_ROW + 14 : 0);

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"" FONT "\">\n",
            width, height, width, height);
    if (c->title) {
        fputs("<title>", f);
        put_text(f, c->title);
        fputs("</title>\n", f);
    }
    fputs("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n", f);
    if (c->title) {
        fprintf(f, "<text x=\"%.2f\" y=\"25\" text-anchor=\"middle\" font-size=\"16\" "
                   "font-weight=\"bold\">", width / 2);
        put_text(f, c->title);
        fputs("</text>\n", f);
    }
    for (int p = 0; p < c->npanels; p++)
        draw_panel(f, &c->panels[p], p, 10 + p * pw, title_h, pw, ph);
    if (rows) draw_legend(f, c->legend, width, title_h + ph + 4, row_start, rows);
    fputs("</svg>\n", f);
    free(row_start);
    if (fflush(f) || ferror(f))
        return nn_ctx_fail(ctx, NN_EIO, "%s: write failed: %s", name, strerror(errno));
    return NN_OK;
}

nn_status nn_svg_write(nn_ctx *ctx, const char *path, const nn_svg_chart *chart) {
    nn_status st = check_chart(ctx, path, chart);
    if (st) return st;
    FILE *f = fopen(path, "w");
    if (!f)
        return nn_ctx_fail(ctx, NN_EIO, "%s: cannot open for writing: %s", path, strerror(errno));
    st = nn_svg_write_file(ctx, f, path, chart);
    if (fclose(f) && !st)
        st = nn_ctx_fail(ctx, NN_EIO, "%s: write failed: %s", path, strerror(errno));
    if (st) remove(path);
    return st;
}
