using Microsoft.Data.Sqlite;

namespace FluxNative.Server;

/// <summary>The webhook outbox in SQLite (<see cref="IPredictionStore.AddDeliveries"/> and what follows it there).</summary>
internal sealed partial class PredictionStore
{
    private const string DeliveryColumns = "id, prediction_id, event, url, body, attempts";

    /// <summary>
    /// One row per delivery: <c>state</c> pending, delivered or failed; <c>attempts</c> counted when leased; the lease as
    /// a job's. Finished rows stay until pruned (their ids keep a second write of the same event out meanwhile).
    /// </summary>
    private const string OutboxSchema = """
        CREATE TABLE IF NOT EXISTS webhook_deliveries (
            id TEXT PRIMARY KEY,
            prediction_id TEXT NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            lease_owner TEXT,
            lease_expires TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT);
        CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
        """;

    public void AddDeliveries(IReadOnlyList<WebhookDelivery> deliveries)
    {
        lock (gate)
        {
            using SqliteTransaction transaction = connection.BeginTransaction();
            InsertDeliveries(deliveries);
            transaction.Commit();
        }
    }

    public IReadOnlyList<WebhookDelivery> LeaseDeliveries(string owner, int max, TimeSpan lease)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        lock (gate)
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            using SqliteTransaction transaction = connection.BeginTransaction(deferred: false);
            using SqliteCommand take = connection.CreateCommand();
            // One writer at a time (BEGIN IMMEDIATE): no other lease interleaves, as SKIP LOCKED gives PostgreSQL's store.
            take.CommandText = $"""
                UPDATE webhook_deliveries SET lease_owner = $owner, lease_expires = $expires, attempts = attempts + 1
                WHERE id IN (
                    SELECT id FROM webhook_deliveries
                    WHERE state = 'pending' AND next_attempt_at <= $now AND (lease_expires IS NULL OR lease_expires < $now)
                    ORDER BY next_attempt_at, rowid LIMIT $max)
                RETURNING {DeliveryColumns};
                """;
            take.Parameters.AddWithValue("$owner", owner);
            take.Parameters.AddWithValue("$now", Time(now));
            take.Parameters.AddWithValue("$expires", Time(now + lease));
            take.Parameters.AddWithValue("$max", max);
            var leased = new List<WebhookDelivery>();
            using (SqliteDataReader reader = take.ExecuteReader())
            {
                while (reader.Read())
                {
                    leased.Add(new WebhookDelivery(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetString(4), reader.GetInt32(5)));
                }
            }

            transaction.Commit();
            return leased;
        }
    }

    public bool RecordDelivery(string owner, WebhookDelivery delivery, DeliveryOutcome outcome, TimeSpan retryIn, string? error)
    {
        lock (gate)
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            using SqliteCommand record = connection.CreateCommand();
            record.CommandText = """
                UPDATE webhook_deliveries SET state = $state, next_attempt_at = $next, lease_owner = NULL, lease_expires = NULL,
                    last_error = $error, completed_at = $completed
                WHERE id = $id AND lease_owner = $owner AND attempts = $attempt AND state = 'pending';
                """;
            record.Parameters.AddWithValue("$state", OutcomeState(outcome));
            record.Parameters.AddWithValue("$next", Time(outcome == DeliveryOutcome.Retry ? now + retryIn : now));
            record.Parameters.AddWithValue("$error", (object?)error ?? DBNull.Value);
            record.Parameters.AddWithValue("$completed", outcome == DeliveryOutcome.Retry ? DBNull.Value : Time(now));
            record.Parameters.AddWithValue("$id", delivery.Id);
            record.Parameters.AddWithValue("$owner", owner);
            record.Parameters.AddWithValue("$attempt", delivery.Attempt);
            return record.ExecuteNonQuery() == 1;
        }
    }

    public OutboxState Outbox()
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = """
                SELECT count(*) FILTER (WHERE state = 'pending'),
                       count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= $now AND (lease_expires IS NULL OR lease_expires < $now)),
                       count(*) FILTER (WHERE state = 'failed')
                FROM webhook_deliveries;
                """;
            command.Parameters.AddWithValue("$now", Time(DateTimeOffset.UtcNow));
            using SqliteDataReader reader = command.ExecuteReader();
            reader.Read();
            return new OutboxState(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt32(2));
        }
    }

    public int PruneDeliveries(TimeSpan age)
    {
        lock (gate)
        {
            using SqliteCommand prune = connection.CreateCommand();
            prune.CommandText = "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND completed_at < $before;";
            prune.Parameters.AddWithValue("$before", Time(DateTimeOffset.UtcNow - age));
            return prune.ExecuteNonQuery();
        }
    }

    /// <summary>The row's <c>state</c> after an attempt with <paramref name="outcome"/>.</summary>
    internal static string OutcomeState(DeliveryOutcome outcome) => outcome switch
    {
        DeliveryOutcome.Delivered => "delivered",
        DeliveryOutcome.Failed => "failed",
        _ => "pending",
    };

    /// <summary>Inserts deliveries, due now, in the caller's transaction (under <see cref="gate"/>); an id already there is left alone.</summary>
    private void InsertDeliveries(IReadOnlyList<WebhookDelivery>? deliveries)
    {
        string now = Time(DateTimeOffset.UtcNow);
        foreach (WebhookDelivery d in deliveries ?? [])
        {
            using SqliteCommand insert = connection.CreateCommand();
            insert.CommandText = "INSERT OR IGNORE INTO webhook_deliveries (id, prediction_id, event, url, body, next_attempt_at, created_at) " +
                "VALUES ($id, $prediction, $event, $url, $body, $now, $now);";
            insert.Parameters.AddWithValue("$id", d.Id);
            insert.Parameters.AddWithValue("$prediction", d.PredictionId);
            insert.Parameters.AddWithValue("$event", d.Event);
            insert.Parameters.AddWithValue("$url", d.Url);
            insert.Parameters.AddWithValue("$body", d.Body);
            insert.Parameters.AddWithValue("$now", now);
            insert.ExecuteNonQuery();
        }
    }
}
