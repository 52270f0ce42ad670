/* web_assets.h - the dashboard's files, built into the binary from
 * master/web/ (and Chart.js from libjs-chart.js) by master/web/embed.py
 * at build time, so the dashboard works with no network access. */
#ifndef TQ_MASTER_WEB_ASSETS_H
#define TQ_MASTER_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path; /* URL path, e.g. "/app.js" */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t len;
} tq_web_asset_t;

extern const tq_web_asset_t tq_web_assets[];
extern const size_t tq_web_nassets;

#endif
