/* Chart.js was not found at build time (-Dchartjs=): the dashboard shows no charts. */
