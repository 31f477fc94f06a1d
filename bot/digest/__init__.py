"""The scheduled daily failure digest: failed BK-JOB steps of the last 24 h, grouped by cause.

collect (BK-JOB lists and job status) → build (rule-based analysis, grouping, history) →
render (WorkTool text, WeCom markdown, trend PNG) → schedule (APScheduler component,
exactly-once posting) ; cli (`job-doctor digest`).
"""
