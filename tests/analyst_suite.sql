-- Analyst suite: the same SQL text runs unchanged on Sluice (DataFusion 55, generic dialect) and on
-- DuckDB (the peer, see tests/analyst_suite.py), over the Parquet files of the Delta table
-- `notifications` (day = DATE partition column taken from the day=YYYY-MM-DD directory).
--
-- Format: every query starts with a header line made of two dashes, a space, the word query, a
-- colon and the query's snake_case name; the next line may be a header of the same shape with
-- the word tolerance and a relative float (default: exact, i.e. 1e-9 relative for floats). A
-- query is one statement and runs until the next query header; a trailing semicolon is tolerated.
-- Lines before the first header (this block) are ignored; it avoids spelling out the header
-- text so that even a parser that splits on it stays right.
--
-- Rules that keep both engines identical:
-- * every output column is aliased, every ORDER BY is total, output is bounded;
-- * NULL ordering is always spelled out where a sort key can be NULL (DuckDB sorts NULLs last in
--   both directions, DataFusion first for DESC);
-- * no integer division and no 1.0 literals (DECIMAL in DuckDB, Float64 in DataFusion): CAST to DOUBLE;
-- * approx_percentile_cont(x, p) is DataFusion's t-digest; DuckDB has no such function, so the
--   runner defines a DuckDB macro approx_percentile_cont(x, p) := quantile_cont(x, p) (exact),
--   and the query carries a tolerance.
-- * exact percentiles (median, quantile_cont, percentile_cont ... WITHIN GROUP) take DOUBLE input
--   (DataFusion returns the input type, so integers would be truncated) and use p = 0.25/0.5/0.75:
--   DataFusion truncates the interpolation weight to 6 decimals (INTERPOLATION_PRECISION in
--   percentile_cont.rs), which is exact only when p * (n - 1) has a short binary fraction; other p
--   get a small tolerance.
-- * extract(epoch FROM ts) differs in the last bits between the engines (both return DOUBLE
--   seconds, computed differently), so it is only used under a tolerance.

-- query: count_by_platform
SELECT platform,
       count(*) AS notifications,
       count(DISTINCT type) AS types,
       min(occurred_at) AS first_at,
       max(occurred_at) AS last_at
FROM notifications
GROUP BY platform
ORDER BY platform

-- query: count_by_type
SELECT type,
       count(*) AS notifications,
       count(post_id) AS with_post,
       count(DISTINCT platform) AS platforms
FROM notifications
GROUP BY type
ORDER BY type

-- query: count_by_day
SELECT day,
       count(*) AS notifications,
       count(DISTINCT platform) AS platforms,
       min(occurred_at) AS first_at,
       max(received_at) AS last_received_at
FROM notifications
GROUP BY day
ORDER BY day

-- query: daily_running_total
SELECT day,
       notifications,
       sum(notifications) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running_total,
       notifications - lag(notifications, 1, 0) OVER (ORDER BY day) AS change_from_previous_day
FROM (SELECT day, count(*) AS notifications FROM notifications GROUP BY day) AS per_day
ORDER BY day

-- query: platform_type_matrix
SELECT platform,
       sum(CASE WHEN type = 'post.created' THEN 1 ELSE 0 END) AS created,
       sum(CASE WHEN type = 'post.edited' THEN 1 ELSE 0 END) AS edited,
       sum(CASE WHEN type = 'post.liked' THEN 1 ELSE 0 END) AS liked,
       sum(CASE WHEN type = 'post.shared' THEN 1 ELSE 0 END) AS shared,
       sum(CASE WHEN type = 'post.commented' THEN 1 ELSE 0 END) AS commented,
       sum(CASE WHEN type = 'post.deleted' THEN 1 ELSE 0 END) AS deleted,
       count(*) FILTER (WHERE type NOT LIKE 'post.%') AS other
FROM notifications
GROUP BY platform
ORDER BY platform

-- query: top_tags
SELECT tag,
       count(*) AS uses,
       count(DISTINCT post_id) AS posts
FROM (SELECT unnest(tags) AS tag, post_id FROM notifications) AS t
WHERE tag IS NOT NULL
GROUP BY tag
ORDER BY uses DESC, tag
LIMIT 20

-- query: top_tags_per_platform_ranked
SELECT platform, tag, uses, tag_rank
FROM (
    SELECT platform,
           tag,
           uses,
           rank() OVER (PARTITION BY platform ORDER BY uses DESC) AS tag_rank
    FROM (
        SELECT platform, tag, count(*) AS uses
        FROM (SELECT platform, unnest(tags) AS tag FROM notifications) AS t
        WHERE tag IS NOT NULL
        GROUP BY platform, tag
    ) AS per_tag
) AS ranked
WHERE tag_rank <= 5
ORDER BY platform, tag_rank, tag

-- query: distinct_authors_by_platform
SELECT platform,
       count(DISTINCT author_id) AS authors,
       count(DISTINCT actor_id) AS actors,
       count(DISTINCT post_id) AS posts,
       count(*) - count(author_id) AS rows_without_author
FROM notifications
GROUP BY platform
ORDER BY platform

-- query: hourly_histogram
SELECT date_trunc('hour', occurred_at) AS hour,
       count(*) AS notifications,
       count(DISTINCT platform) AS platforms
FROM notifications
GROUP BY date_trunc('hour', occurred_at)
ORDER BY hour
LIMIT 2000

-- query: ingest_lag_approx_percentiles
-- tolerance: 0.05
SELECT platform,
       approx_percentile_cont(lag_ms, 0.5) AS p50_lag_ms,
       approx_percentile_cont(lag_ms, 0.9) AS p90_lag_ms
FROM (
    SELECT platform,
           (extract(epoch FROM received_at) - extract(epoch FROM occurred_at)) * 1000 AS lag_ms
    FROM notifications
) AS lags
GROUP BY platform
ORDER BY platform

-- query: likes_exact_percentiles
SELECT platform,
       median(CAST(metrics['likes'] AS DOUBLE)) AS median_likes,
       quantile_cont(CAST(metrics['likes'] AS DOUBLE), 0.25) AS p25_likes,
       percentile_cont(0.75) WITHIN GROUP (ORDER BY CAST(metrics['likes'] AS DOUBLE)) AS p75_likes,
       median(CAST(metrics['shares'] AS DOUBLE)) AS median_shares,
       max(metrics['likes']) AS max_likes
FROM notifications
GROUP BY platform
ORDER BY platform

-- query: likes_tail_percentiles
-- tolerance: 1e-4
SELECT type,
       quantile_cont(CAST(metrics['likes'] AS DOUBLE), 0.9) AS p90_likes,
       quantile_cont(CAST(metrics['likes'] AS DOUBLE), 0.99) AS p99_likes,
       percentile_cont(0.999) WITHIN GROUP (ORDER BY CAST(metrics['likes'] AS DOUBLE)) AS p999_likes
FROM notifications
GROUP BY type
ORDER BY type

-- query: metric_sums_by_type
SELECT type,
       sum(metrics['likes']) AS likes,
       sum(metrics['shares']) AS shares,
       count(metrics['likes']) AS rows_with_likes,
       count(metrics) AS rows_with_metrics,
       avg(CAST(metrics['likes'] AS DOUBLE)) AS avg_likes
FROM notifications
GROUP BY type
ORDER BY type

-- query: top_liked_posts
SELECT post_id,
       max(metrics['likes']) AS max_likes,
       sum(metrics['shares']) AS shares,
       count(*) AS notifications
FROM notifications
WHERE post_id IS NOT NULL AND metrics['likes'] IS NOT NULL
GROUP BY post_id
ORDER BY max_likes DESC, post_id
LIMIT 20

-- query: time_range_by_day_and_type
SELECT day,
       type,
       count(*) AS notifications,
       min(occurred_at) AS first_at,
       max(occurred_at) AS last_at
FROM notifications
WHERE occurred_at BETWEEN TIMESTAMP '2026-11-16 06:00:00' AND TIMESTAMP '2026-11-20 17:59:59.999999'
GROUP BY day, type
ORDER BY day, type

-- query: lang_breakdown_with_nulls
SELECT lang,
       count(*) AS notifications,
       count(lang) AS non_null_lang,
       count(DISTINCT author_id) AS authors,
       CAST(count(*) AS DOUBLE) / CAST(sum(count(*)) OVER () AS DOUBLE) AS share
FROM notifications
GROUP BY lang
ORDER BY lang NULLS LAST

-- query: lang_null_share_by_platform
SELECT platform,
       coalesce(lang, 'und') AS lang_or_und,
       count(*) AS notifications,
       count(*) FILTER (WHERE lang IS NULL) AS null_lang
FROM notifications
GROUP BY platform, coalesce(lang, 'und')
ORDER BY platform, lang_or_und

-- query: top_authors_with_posts
WITH author_events AS (
    SELECT author_id, count(*) AS events
    FROM notifications
    WHERE author_id IS NOT NULL
    GROUP BY author_id
), post_events AS (
    SELECT author_id, post_id, count(*) AS events
    FROM notifications
    WHERE author_id IS NOT NULL AND post_id IS NOT NULL
    GROUP BY author_id, post_id
)
SELECT a.author_id AS author_id,
       a.events AS author_events,
       count(p.post_id) AS posts,
       max(p.events) AS busiest_post_events
FROM author_events AS a
JOIN post_events AS p ON a.author_id = p.author_id
GROUP BY a.author_id, a.events
ORDER BY author_events DESC, author_id
LIMIT 20

-- query: deleted_posts_join
WITH created AS (
    SELECT post_id, platform, min(occurred_at) AS created_at
    FROM notifications
    WHERE type = 'post.created' AND post_id IS NOT NULL
    GROUP BY post_id, platform
), deleted AS (
    SELECT post_id, platform, max(occurred_at) AS deleted_at
    FROM notifications
    WHERE type = 'post.deleted' AND post_id IS NOT NULL
    GROUP BY post_id, platform
)
SELECT c.platform AS platform,
       count(*) AS created_then_deleted,
       sum(CASE WHEN d.deleted_at > c.created_at THEN 1 ELSE 0 END) AS deleted_after_create,
       min(c.created_at) AS first_created_at,
       max(d.deleted_at) AS last_deleted_at
FROM created AS c
JOIN deleted AS d ON c.post_id = d.post_id AND c.platform = d.platform
GROUP BY c.platform
ORDER BY platform

-- query: web_client_by_platform
SELECT platform,
       count(*) FILTER (WHERE attributes LIKE '%"client":"web"%') AS web_client,
       count(attributes) AS with_attributes,
       count(*) - count(attributes) AS without_attributes,
       count(DISTINCT producer_id) AS producers
FROM notifications
GROUP BY platform
ORDER BY platform
