using Npgsql;
using NpgsqlTypes;

namespace FluxNative.Server;

/// <summary>The webhook outbox in PostgreSQL: the SQLite store's rules (<see cref="PredictionStore"/>), leased with SKIP LOCKED as jobs are.</summary>
internal sealed partial class PostgresPredictionStore
{
    private const string DeliveryColumns = "id, prediction_id, event, url, body, attempts";

    private const string OutboxSchema = """
        CREATE TABLE IF NOT EXISTS webhook_deliveries (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            prediction_id TEXT NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TIMESTAMPTZ NOT NULL,
            lease_owner TEXT,
            lease_expires TIMESTAMPTZ,
            last_error TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            completed_at TIMESTAMPTZ);
        CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at, seq) WHERE state = 'pending';
        """;

    public void AddDeliveries(IReadOnlyList<WebhookDelivery> deliveries)
    {
        if (deliveries.Count == 0)
        {
            return;
        }

        using NpgsqlConnection connection = dataSource.OpenConnection();
        InsertDeliveries(connection, deliveries);
    }

    public IReadOnlyList<WebhookDelivery> LeaseDeliveries(string owner, int max, TimeSpan lease)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        // One statement: the due rows locked as picked, those another node's statement holds skipped; the database's
        // clock decides what is due and what expired, so the nodes' clocks need not agree.
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new($"""
            WITH due AS (
                SELECT id FROM webhook_deliveries
                WHERE state = 'pending' AND next_attempt_at <= clock_timestamp() AND (lease_expires IS NULL OR lease_expires < clock_timestamp())
                ORDER BY next_attempt_at, seq LIMIT @max FOR UPDATE SKIP LOCKED)
            UPDATE webhook_deliveries d SET lease_owner = @owner, lease_expires = clock_timestamp() + @lease, attempts = d.attempts + 1
            FROM due WHERE d.id = due.id
            RETURNING {string.Join(", ", DeliveryColumns.Split(", ").Select(c => "d." + c))}, d.seq;
            """, connection);
        command.Parameters.AddWithValue("max", max);
        command.Parameters.AddWithValue("owner", owner);
        command.Parameters.AddWithValue("lease", NpgsqlDbType.Interval, lease);
        using NpgsqlDataReader reader = command.ExecuteReader();
        var leased = new List<(long Seq, WebhookDelivery Delivery)>();
        while (reader.Read())
        {
            leased.Add((reader.GetInt64(6),
                new WebhookDelivery(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetString(4), reader.GetInt32(5))));
        }

        return [.. leased.OrderBy(l => l.Seq).Select(l => l.Delivery)];
    }

    public bool RecordDelivery(string owner, WebhookDelivery delivery, DeliveryOutcome outcome, TimeSpan retryIn, string? error)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand record = new("""
            UPDATE webhook_deliveries SET state = @state, next_attempt_at = clock_timestamp() + @retry_in, lease_owner = NULL, lease_expires = NULL,
                last_error = @error, completed_at = CASE WHEN @state = 'pending' THEN NULL ELSE clock_timestamp() END
            WHERE id = @id AND lease_owner = @owner AND attempts = @attempt AND state = 'pending';
            """, connection);
        record.Parameters.AddWithValue("state", PredictionStore.OutcomeState(outcome));
        record.Parameters.AddWithValue("retry_in", NpgsqlDbType.Interval, outcome == DeliveryOutcome.Retry ? retryIn : TimeSpan.Zero);
        record.Parameters.AddWithValue("error", NpgsqlDbType.Text, (object?)error ?? DBNull.Value);
        record.Parameters.AddWithValue("id", delivery.Id);
        record.Parameters.AddWithValue("owner", owner);
        record.Parameters.AddWithValue("attempt", delivery.Attempt);
        return record.ExecuteNonQuery() == 1;
    }

    public OutboxState Outbox()
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new("""
            SELECT count(*) FILTER (WHERE state = 'pending'),
                   count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= clock_timestamp() AND (lease_expires IS NULL OR lease_expires < clock_timestamp())),
                   count(*) FILTER (WHERE state = 'failed')
            FROM webhook_deliveries;
            """, connection);
        using NpgsqlDataReader reader = command.ExecuteReader();
        reader.Read();
        return new OutboxState((int)reader.GetInt64(0), (int)reader.GetInt64(1), (int)reader.GetInt64(2));
    }

    public int PruneDeliveries(TimeSpan age)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand prune = new("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND completed_at < clock_timestamp() - @age;", connection);
        prune.Parameters.AddWithValue("age", NpgsqlDbType.Interval, age);
        return prune.ExecuteNonQuery();
    }

    /// <summary>
    /// Inserts deliveries, due now, on <paramref name="connection"/> (in its transaction, when it has one), in one
    /// statement; an id already there is left alone. Notifies the first prediction's id, which wakes the nodes' senders.
    /// </summary>
    private static void InsertDeliveries(NpgsqlConnection connection, IReadOnlyList<WebhookDelivery>? deliveries)
    {
        if (deliveries is not { Count: > 0 })
        {
            return;
        }

        using NpgsqlCommand insert = new($"""
            WITH added AS (
                INSERT INTO webhook_deliveries (id, prediction_id, event, url, body, next_attempt_at, created_at)
                SELECT d.id, d.prediction_id, d.event, d.url, d.body, clock_timestamp(), clock_timestamp()
                FROM unnest(@ids, @predictions, @events, @urls, @bodies) WITH ORDINALITY AS d (id, prediction_id, event, url, body, n)
                ORDER BY d.n
                ON CONFLICT (id) DO NOTHING RETURNING prediction_id)
            SELECT pg_notify('{Channel}', min(prediction_id)) FROM added HAVING count(*) > 0;
            """, connection);
        insert.Parameters.AddWithValue("ids", deliveries.Select(d => d.Id).ToArray());
        insert.Parameters.AddWithValue("predictions", deliveries.Select(d => d.PredictionId).ToArray());
        insert.Parameters.AddWithValue("events", deliveries.Select(d => d.Event).ToArray());
        insert.Parameters.AddWithValue("urls", deliveries.Select(d => d.Url).ToArray());
        insert.Parameters.AddWithValue("bodies", deliveries.Select(d => d.Body).ToArray());
        insert.ExecuteNonQuery();
    }
}
