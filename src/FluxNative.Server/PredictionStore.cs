using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Sqlite;

namespace FluxNative.Server;

/// <summary>
/// Where predictions are kept. <see cref="PredictionStore"/> is the SQLite one (the embedded default),
/// <see cref="PostgresPredictionStore"/> the PostgreSQL one (several nodes over one database); both pass the same
/// contract tests (PredictionStoreContractTests). <see cref="StorageMonitor"/> lives with their faults (and the
/// fault-injection tests wrap it). Every method may throw what the storage throws (<see cref="SqliteException"/>,
/// <see cref="Npgsql.NpgsqlException"/>, <see cref="IOException"/>, <see cref="UnauthorizedAccessException"/>):
/// <see cref="StorageMonitor.IsStorageFault"/> tells those from bugs.
/// </summary>
internal interface IPredictionStore
{
    /// <summary>Where the database is, for messages: the SQLite file's path, or the PostgreSQL server and database (never a password).</summary>
    string Location { get; }

    /// <summary>True when the database is a file and that file is gone (deleted under the server); a database server's is never.</summary>
    bool IsDeleted { get; }

    void Insert(PredictionView p);

    /// <summary>Writes a prediction's state. A state that is not final never replaces a final one (a late write cannot undo a finish).</summary>
    void Update(PredictionView p);

    PredictionView? Get(string id);

    IReadOnlyList<PredictionView> List(int limit, string? before);

    IReadOnlyList<PredictionView> Unfinished();

    /// <summary>A small write, as a prediction's would be: throws when the database cannot be written now.</summary>
    void Probe();

    /// <summary>
    /// When the database file was deleted under the server (its folder with it, say), writes the database back at
    /// <see cref="Path"/> from the open connection and reopens it there: true when it did. False when the file is there.
    /// </summary>
    bool RestoreIfDeleted();

    /// <summary>
    /// The secret <paramref name="key"/> (the URL-signing key, the webhook secret), created with <paramref name="create"/>
    /// the first time, the same for every node of one database. Never created over existing predictions: a new key would
    /// silently break every output URL or webhook signature handed out so far, so a database that has predictions but
    /// lost its key is refused.
    /// </summary>
    /// <exception cref="FluxServerConfigurationException">The key is missing but predictions exist.</exception>
    string GetOrCreateSetting(string key, Func<string> create);

    // The job queue: a prediction put in with Enqueue waits as a job until a worker leases it; the lease runs out unless
    // renewed (a heartbeat), and a job whose lease ran out (its worker died) is leased again by the next worker that
    // asks, from the start, with its attempt counted. Complete records the outcome once, for the lease's holder only.

    /// <summary>
    /// Inserts a prediction and its job together (both or neither). <paramref name="batchKey"/>: jobs with equal keys can
    /// share a batch; <paramref name="spec"/>: what the worker runs (<see cref="LeasedJob.Spec"/>).
    /// </summary>
    void Enqueue(PredictionView p, string batchKey, string spec);

    /// <summary>
    /// Leases for <paramref name="worker"/>, for <paramref name="lease"/>, the oldest job that is free (never leased, or its
    /// lease ran out) and up to <paramref name="maxJobs"/> - 1 more free ones with its batch key, oldest first. Jobs
    /// another worker is leasing at that moment are skipped, not waited for. Empty when no job is free.
    /// </summary>
    IReadOnlyList<LeasedJob> Lease(string worker, int maxJobs, TimeSpan lease);

    /// <summary>
    /// Extends the leases of <paramref name="jobs"/> that <paramref name="worker"/> still holds to <paramref name="lease"/>
    /// from now; returns the ids it still holds (a job missing from them was lost: another worker took it up) and which
    /// of them were asked to stop (<see cref="Abort"/>).
    /// </summary>
    LeaseRenewal Renew(string worker, IReadOnlyList<LeasedJob> jobs, TimeSpan lease);

    /// <summary>
    /// Stops a queued prediction from any node: a job that waits leaves the queue and <paramref name="final"/> (canceled,
    /// or failed as timed out) is written, in one transaction; a job a worker holds is marked, and the worker stops it and
    /// records the state <paramref name="final"/> names.
    /// </summary>
    AbortOutcome Abort(string id, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null);

    /// <summary>
    /// Records <paramref name="final"/> (a final state) for <paramref name="job"/> and takes the job off the queue, in one
    /// transaction, when <paramref name="worker"/> still holds its lease (this attempt's); false, with nothing written,
    /// when it does not (another worker has the job now, or finished it): the outcome is recorded exactly once.
    /// <paramref name="deliveries"/> (its output and completed webhooks) go into the outbox in the same transaction, so a
    /// recorded outcome always has its webhooks (and an unrecorded one none).
    /// </summary>
    bool Complete(string worker, LeasedJob job, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null);

    /// <summary>The queue now (<see cref="QueueState"/>).</summary>
    QueueState Queue();

    // The webhook outbox: every delivery is a row, leased by the node that sends it (as jobs are), its attempts counted
    // and its next attempt timed in the row, so retries survive a restart and no two nodes send one attempt.

    /// <summary>Puts deliveries in the outbox, due now. One whose id is there already is left as it is (<see cref="WebhookDelivery.StableId"/>).</summary>
    void AddDeliveries(IReadOnlyList<WebhookDelivery> deliveries);

    /// <summary>
    /// Leases for <paramref name="owner"/>, for <paramref name="lease"/>, up to <paramref name="max"/> deliveries that are due
    /// (pending, their next attempt's time come, no live lease), oldest due first, counting the attempt each is leased
    /// for (<see cref="WebhookDelivery.Attempt"/>). Rows another node is leasing at that moment are skipped.
    /// </summary>
    IReadOnlyList<WebhookDelivery> LeaseDeliveries(string owner, int max, TimeSpan lease);

    /// <summary>
    /// Records the outcome of the attempt <paramref name="delivery"/> was leased for, when <paramref name="owner"/> still
    /// holds that lease (false, nothing written, otherwise): delivered; due again <paramref name="retryIn"/> from now; or
    /// failed for good, with <paramref name="error"/> kept.
    /// </summary>
    bool RecordDelivery(string owner, WebhookDelivery delivery, DeliveryOutcome outcome, TimeSpan retryIn, string? error);

    /// <summary>The outbox now (<see cref="OutboxState"/>).</summary>
    OutboxState Outbox();

    /// <summary>Removes the deliveries made or given up more than <paramref name="age"/> ago (pending ones stay); returns how many.</summary>
    int PruneDeliveries(TimeSpan age);

    /// <summary>
    /// Calls <paramref name="changed"/> with the id of each prediction another node changed (PostgreSQL's LISTEN/NOTIFY:
    /// every insert and state write notifies), until <paramref name="cancellationToken"/> fires; reconnects by itself
    /// after the database comes back (changes meanwhile are not told: callers also read what they track now and then).
    /// SQLite's store has no other node, and returns at once.
    /// </summary>
    Task ListenAsync(Action<string> changed, CancellationToken cancellationToken);
}

/// <summary>
/// Predictions in an SQLite database (one file and a rollback journal): inserted before a prediction is acknowledged,
/// updated at every status change, so a restart finds every prediction ever accepted.
/// </summary>
/// <remarks>
/// The settings turn storage faults into errors, never into a crash or silent loss:
/// <list type="bullet">
/// <item><c>mmap_size=0</c> and a rollback journal (<c>journal_mode=DELETE</c>) rather than WAL: nothing of the
/// database is memory-mapped. WAL keeps its index in a mapped <c>-shm</c> file, and a page of a mapped file that
/// cannot be written (the file truncated or made immutable, or a full disk) kills the process with SIGBUS instead of
/// failing a write; through read and write calls the same faults are error codes (SQLITE_FULL, SQLITE_READONLY,
/// SQLITE_IOERR) that fail one request.</item>
/// <item>The rollback journal is created next to the database at every write, and SQLite checks then that the file
/// it has open is still the one at its path (SQLITE_READONLY_DBMOVED): a database deleted under the server fails its
/// writes instead of taking predictions into a file that no longer exists (which WAL does, silently).</item>
/// <item><c>synchronous=FULL</c>, the rollback journal's safe setting: writes are few (three per prediction).</item>
/// </list>
/// </remarks>
internal sealed partial class PredictionStore : IPredictionStore, IDisposable
{
    private const string Columns =
        "id, kind, model, version, status, input, output, error, logs, metrics, created_at, started_at, completed_at, webhook, webhook_events, base_url";

    /// <summary>How long a statement waits for a database another process holds.</summary>
    private const int LockTimeoutSeconds = 2;

    private static readonly string Terminal = $"('{PredictionStatus.Succeeded}', '{PredictionStatus.Failed}', '{PredictionStatus.Canceled}')";

    private readonly object gate = new();
    private SqliteConnection connection;

    /// <summary>Opens (or creates) the database and checks that it can be written.</summary>
    /// <exception cref="FluxServerConfigurationException">It cannot be opened, read or written; the message says which file and why, in one line.</exception>
    public PredictionStore(string path)
    {
        Location = System.IO.Path.GetFullPath(path);
        try
        {
            if (System.IO.Path.GetDirectoryName(Location) is { } directory)
            {
                Directory.CreateDirectory(directory);
            }

            connection = Open(Location);
            Execute("""
                CREATE TABLE IF NOT EXISTS predictions (
                    id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    model TEXT NOT NULL,
                    version TEXT,
                    status TEXT NOT NULL,
                    input TEXT NOT NULL,
                    output TEXT,
                    error TEXT,
                    logs TEXT NOT NULL DEFAULT '',
                    metrics TEXT,
                    created_at TEXT NOT NULL,
                    started_at TEXT,
                    completed_at TEXT,
                    webhook TEXT,
                    webhook_events TEXT,
                    base_url TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_at);
                CREATE INDEX IF NOT EXISTS predictions_status ON predictions (status);
                CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS jobs (
                    prediction_id TEXT PRIMARY KEY REFERENCES predictions (id),
                    batch_key TEXT NOT NULL,
                    spec TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    leased_at TEXT,
                    lease_expires TEXT,
                    abort_status TEXT,
                    abort_error TEXT);
                """ + OutboxSchema);
            // A database that opens but cannot be written (a read-only file or folder, a full disk) would fail every
            // prediction later: refuse to start now, saying so.
            Probe();
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            connection?.Dispose();
            throw new FluxServerConfigurationException($"Cannot use the database '{Location}': {StorageMonitor.Describe(e)}");
        }
    }

    public string Location { get; }

    public bool IsDeleted => !File.Exists(Location);

    public void Insert(PredictionView p)
    {
        lock (gate)
        {
            InsertPrediction(p);
        }
    }

    public void Enqueue(PredictionView p, string batchKey, string spec)
    {
        lock (gate)
        {
            using SqliteTransaction transaction = connection.BeginTransaction();
            InsertPrediction(p);
            using SqliteCommand job = connection.CreateCommand();
            job.CommandText = "INSERT INTO jobs (prediction_id, batch_key, spec) VALUES ($id, $key, $spec);";
            job.Parameters.AddWithValue("$id", p.Id);
            job.Parameters.AddWithValue("$key", batchKey);
            job.Parameters.AddWithValue("$spec", spec);
            job.ExecuteNonQuery();
            transaction.Commit();
        }
    }

    public IReadOnlyList<LeasedJob> Lease(string worker, int maxJobs, TimeSpan lease)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxJobs, 1);
        lock (gate)
        {
            // One file, one writer at a time (BEGIN IMMEDIATE takes the write lock first): no two leases can interleave,
            // which PostgreSQL's store gets from row locks with SKIP LOCKED.
            DateTimeOffset now = DateTimeOffset.UtcNow;
            using SqliteTransaction transaction = connection.BeginTransaction(deferred: false);
            const string Free = "(lease_expires IS NULL OR lease_expires < $now)";
            using SqliteCommand pick = connection.CreateCommand();
            pick.CommandText = $"""
                WITH first AS (SELECT prediction_id, batch_key FROM jobs WHERE {Free} ORDER BY rowid LIMIT 1)
                SELECT jobs.prediction_id, jobs.batch_key, jobs.spec FROM jobs, first
                WHERE jobs.batch_key = first.batch_key AND {Free.Replace("lease_expires", "jobs.lease_expires", StringComparison.Ordinal)}
                ORDER BY jobs.prediction_id = first.prediction_id DESC, jobs.rowid LIMIT $max;
                """;
            pick.Parameters.AddWithValue("$now", Time(now));
            pick.Parameters.AddWithValue("$max", maxJobs);
            var picked = new List<(string Id, string Spec)>();
            string? batchKey = null;
            using (SqliteDataReader reader = pick.ExecuteReader())
            {
                while (reader.Read())
                {
                    picked.Add((reader.GetString(0), reader.GetString(2)));
                    batchKey = reader.GetString(1);
                }
            }

            var jobs = new List<LeasedJob>();
            foreach ((string id, string spec) in picked)
            {
                using SqliteCommand take = connection.CreateCommand();
                take.CommandText = "UPDATE jobs SET lease_owner = $worker, leased_at = $now, lease_expires = $expires, attempts = attempts + 1 " +
                    "WHERE prediction_id = $id RETURNING attempts;";
                take.Parameters.AddWithValue("$worker", worker);
                take.Parameters.AddWithValue("$now", Time(now));
                take.Parameters.AddWithValue("$expires", Time(now + lease));
                take.Parameters.AddWithValue("$id", id);
                int attempt = Convert.ToInt32(take.ExecuteScalar(), CultureInfo.InvariantCulture);
                using SqliteCommand read = connection.CreateCommand();
                read.CommandText = $"SELECT {Columns} FROM predictions WHERE id = $id;";
                read.Parameters.AddWithValue("$id", id);
                using SqliteDataReader reader = read.ExecuteReader();
                reader.Read();
                jobs.Add(new LeasedJob(Read(reader), batchKey!, attempt, spec));
            }

            transaction.Commit();
            return jobs;
        }
    }

    public LeaseRenewal Renew(string worker, IReadOnlyList<LeasedJob> jobs, TimeSpan lease)
    {
        lock (gate)
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            using SqliteTransaction transaction = connection.BeginTransaction(deferred: false);
            var held = new List<string>();
            var aborts = new Dictionary<string, JobAbort>(StringComparer.Ordinal);
            foreach (LeasedJob job in jobs)
            {
                using SqliteCommand renew = connection.CreateCommand();
                renew.CommandText = "UPDATE jobs SET lease_expires = $expires WHERE prediction_id = $id AND attempts = $attempt AND lease_owner = $worker " +
                    "RETURNING abort_status, abort_error;";
                renew.Parameters.AddWithValue("$expires", Time(now + lease));
                renew.Parameters.AddWithValue("$id", job.Id);
                renew.Parameters.AddWithValue("$attempt", job.Attempt);
                renew.Parameters.AddWithValue("$worker", worker);
                using SqliteDataReader reader = renew.ExecuteReader();
                if (reader.Read())
                {
                    held.Add(job.Id);
                    if (!reader.IsDBNull(0))
                    {
                        aborts[job.Id] = new JobAbort(reader.GetString(0), reader.IsDBNull(1) ? null : reader.GetString(1));
                    }
                }
            }

            transaction.Commit();
            return new LeaseRenewal(held, aborts);
        }
    }

    public AbortOutcome Abort(string id, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        lock (gate)
        {
            using SqliteTransaction transaction = connection.BeginTransaction(deferred: false);
            using SqliteCommand free = connection.CreateCommand();
            free.CommandText = "DELETE FROM jobs WHERE prediction_id = $id AND (lease_expires IS NULL OR lease_expires < $now);";
            free.Parameters.AddWithValue("$id", id);
            free.Parameters.AddWithValue("$now", Time(DateTimeOffset.UtcNow));
            if (free.ExecuteNonQuery() == 1)
            {
                using SqliteCommand update = connection.CreateCommand();
                update.CommandText = "UPDATE predictions SET status = $status, output = $output, error = $error, logs = $logs, metrics = $metrics, " +
                    "started_at = $started_at, completed_at = $completed_at WHERE id = $id;";
                Bind(update, final);
                update.ExecuteNonQuery();
                InsertDeliveries(deliveries);
                transaction.Commit();
                return AbortOutcome.Finished;
            }

            using SqliteCommand mark = connection.CreateCommand();
            mark.CommandText = "UPDATE jobs SET abort_status = $status, abort_error = $error WHERE prediction_id = $id;";
            mark.Parameters.AddWithValue("$id", id);
            mark.Parameters.AddWithValue("$status", final.Status);
            mark.Parameters.AddWithValue("$error", (object?)final.Error ?? DBNull.Value);
            AbortOutcome outcome = mark.ExecuteNonQuery() == 1 ? AbortOutcome.Requested : AbortOutcome.NoJob;
            transaction.Commit();
            return outcome;
        }
    }

    public bool Complete(string worker, LeasedJob job, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        if (!final.IsTerminal || final.Id != job.Id)
        {
            throw new ArgumentException($"Complete takes the final state of job {job.Id}, not a {final.Status} state of {final.Id}.", nameof(final));
        }

        lock (gate)
        {
            using SqliteTransaction transaction = connection.BeginTransaction(deferred: false);
            using SqliteCommand take = connection.CreateCommand();
            take.CommandText = "DELETE FROM jobs WHERE prediction_id = $id AND lease_owner = $worker AND attempts = $attempt;";
            take.Parameters.AddWithValue("$id", job.Id);
            take.Parameters.AddWithValue("$worker", worker);
            take.Parameters.AddWithValue("$attempt", job.Attempt);
            if (take.ExecuteNonQuery() == 0)
            {
                transaction.Rollback();
                return false;
            }

            using SqliteCommand update = connection.CreateCommand();
            update.CommandText = "UPDATE predictions SET status = $status, output = $output, error = $error, logs = $logs, metrics = $metrics, " +
                "started_at = $started_at, completed_at = $completed_at WHERE id = $id;";
            Bind(update, final);
            update.ExecuteNonQuery();
            InsertDeliveries(deliveries);
            transaction.Commit();
            return true;
        }
    }

    public QueueState Queue()
    {
        lock (gate)
        {
            DateTimeOffset now = DateTimeOffset.UtcNow;
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = """
                SELECT count(*) FILTER (WHERE lease_expires IS NULL OR lease_expires < $now),
                       count(*) FILTER (WHERE lease_expires >= $now),
                       count(DISTINCT lease_owner) FILTER (WHERE lease_expires >= $now),
                       min(leased_at) FILTER (WHERE lease_expires >= $now)
                FROM jobs;
                """;
            command.Parameters.AddWithValue("$now", Time(now));
            using SqliteDataReader reader = command.ExecuteReader();
            reader.Read();
            return new QueueState(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt32(2), reader.IsDBNull(3) ? null : now - ParseTime(reader.GetString(3)));
        }
    }

    public Task ListenAsync(Action<string> changed, CancellationToken cancellationToken) => Task.CompletedTask;

    private void InsertPrediction(PredictionView p)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = $"INSERT INTO predictions ({Columns}) VALUES " +
            "($id, $kind, $model, $version, $status, $input, $output, $error, $logs, $metrics, $created_at, $started_at, $completed_at, $webhook, $webhook_events, $base_url);";
        Bind(command, p);
        command.ExecuteNonQuery();
    }

    public void Update(PredictionView p)
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = "UPDATE predictions SET status = $status, output = $output, error = $error, logs = $logs, metrics = $metrics, " +
                "started_at = $started_at, completed_at = $completed_at WHERE id = $id" +
                (p.IsTerminal ? ";" : $" AND status NOT IN {Terminal};");
            Bind(command, p);
            command.ExecuteNonQuery();
        }
    }

    public PredictionView? Get(string id)
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = $"SELECT {Columns} FROM predictions WHERE id = $id;";
            command.Parameters.AddWithValue("$id", id);
            using SqliteDataReader reader = command.ExecuteReader();
            return reader.Read() ? Read(reader) : null;
        }
    }

    public IReadOnlyList<PredictionView> List(int limit, string? before)
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = before is null
                ? $"SELECT {Columns} FROM predictions ORDER BY created_at DESC, rowid DESC LIMIT $limit;"
                : $"SELECT {Columns} FROM predictions WHERE rowid < (SELECT rowid FROM predictions WHERE id = $before) ORDER BY created_at DESC, rowid DESC LIMIT $limit;";
            command.Parameters.AddWithValue("$limit", limit);
            if (before is not null)
            {
                command.Parameters.AddWithValue("$before", before);
            }

            using SqliteDataReader reader = command.ExecuteReader();
            var list = new List<PredictionView>();
            while (reader.Read())
            {
                list.Add(Read(reader));
            }

            return list;
        }
    }

    public IReadOnlyList<PredictionView> Unfinished()
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = $"SELECT {Columns} FROM predictions WHERE status IN ('{PredictionStatus.Starting}', '{PredictionStatus.Processing}') ORDER BY rowid;";
            using SqliteDataReader reader = command.ExecuteReader();
            var list = new List<PredictionView>();
            while (reader.Read())
            {
                list.Add(Read(reader));
            }

            return list;
        }
    }

    public string GetOrCreateSetting(string key, Func<string> create)
    {
        lock (gate)
        {
            using SqliteCommand select = connection.CreateCommand();
            select.CommandText = "SELECT value FROM settings WHERE key = $key;";
            select.Parameters.AddWithValue("$key", key);
            if (select.ExecuteScalar() is string value)
            {
                return value;
            }

            using SqliteCommand count = connection.CreateCommand();
            count.CommandText = "SELECT COUNT(*) FROM predictions;";
            long predictions = Convert.ToInt64(count.ExecuteScalar(), CultureInfo.InvariantCulture);
            if (predictions > 0)
            {
                throw MissingSetting(Location, key, predictions);
            }

            string created = create();
            using SqliteCommand insert = connection.CreateCommand();
            insert.CommandText = "INSERT INTO settings (key, value) VALUES ($key, $value);";
            insert.Parameters.AddWithValue("$key", key);
            insert.Parameters.AddWithValue("$value", created);
            insert.ExecuteNonQuery();
            return created;
        }
    }

    public void Probe()
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = "INSERT OR REPLACE INTO settings (key, value) VALUES ('heartbeat', $now);";
            command.Parameters.AddWithValue("$now", Time(DateTimeOffset.UtcNow));
            command.ExecuteNonQuery();
        }
    }

    public bool RestoreIfDeleted()
    {
        lock (gate)
        {
            if (File.Exists(Location))
            {
                return false;
            }

            // The open connection still reads the deleted file: copy it (VACUUM INTO writes a consistent copy) beside
            // the path, move the copy into place, and go on with it.
            if (System.IO.Path.GetDirectoryName(Location) is { } directory)
            {
                Directory.CreateDirectory(directory);
            }

            string copy = Location + ".restoring";
            File.Delete(copy);
            using (SqliteCommand vacuum = connection.CreateCommand())
            {
                vacuum.CommandText = "VACUUM INTO $copy;";
                vacuum.Parameters.AddWithValue("$copy", copy);
                vacuum.ExecuteNonQuery();
            }

            File.Move(copy, Location, overwrite: false);
            SqliteConnection reopened = Open(Location);
            connection.Dispose();
            connection = reopened;
            return true;
        }
    }

    public void Dispose()
    {
        lock (gate)
        {
            connection.Dispose();
        }
    }

    /// <summary>Why a database that holds predictions but not the setting <paramref name="key"/> is refused.</summary>
    internal static FluxServerConfigurationException MissingSetting(string location, string key, long predictions)
    {
        string consequence = key switch
        {
            "url_signing_key" => "would make every output URL handed out so far invalid",
            "webhook_secret" => "would make webhook receivers reject every signature (FLUX_WEBHOOK_SECRET can give the secret they know)",
            _ => "would not match what was handed out with them",
        };
        return new FluxServerConfigurationException(
            $"The database '{location}' holds {predictions} prediction(s) but no {key}: a new one {consequence}. " +
            "Restore the database's settings table, or start with another --database.");
    }

    /// <summary>A connection with the settings of the remarks above.</summary>
    private static SqliteConnection Open(string path)
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
            // Another process holding the database (a backup, the sqlite3 shell) gets this long before a statement
            // fails as locked (Microsoft.Data.Sqlite retries a busy database up to it; its default is 30 s): short,
            // because a request waits for it.
            DefaultTimeout = LockTimeoutSeconds,
        }.ToString());
        try
        {
            connection.Open();
            foreach (string pragma in new[]
            {
                $"PRAGMA busy_timeout={LockTimeoutSeconds * 1000};",
                // Before anything is read: no part of the database file is memory-mapped (see the remarks).
                "PRAGMA mmap_size=0;",
                // A database from an older version is in WAL mode (a setting kept in the file): this converts it.
                "PRAGMA journal_mode=DELETE;",
                "PRAGMA synchronous=FULL;",
            })
            {
                using SqliteCommand command = connection.CreateCommand();
                command.CommandText = pragma;
                command.ExecuteNonQuery();
            }

            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    private void Execute(string sql)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static void Bind(SqliteCommand command, PredictionView p)
    {
        command.Parameters.AddWithValue("$id", p.Id);
        command.Parameters.AddWithValue("$kind", p.Kind);
        command.Parameters.AddWithValue("$model", p.Model);
        command.Parameters.AddWithValue("$version", (object?)p.Version ?? DBNull.Value);
        command.Parameters.AddWithValue("$status", p.Status);
        command.Parameters.AddWithValue("$input", p.Input);
        command.Parameters.AddWithValue("$output", p.Output is null ? DBNull.Value : JsonSerializer.Serialize(p.Output));
        command.Parameters.AddWithValue("$error", (object?)p.Error ?? DBNull.Value);
        command.Parameters.AddWithValue("$logs", p.Logs);
        command.Parameters.AddWithValue("$metrics", p.Metrics is null ? DBNull.Value : JsonSerializer.Serialize(p.Metrics));
        command.Parameters.AddWithValue("$created_at", Time(p.CreatedAt));
        command.Parameters.AddWithValue("$started_at", p.StartedAt is { } started ? Time(started) : DBNull.Value);
        command.Parameters.AddWithValue("$completed_at", p.CompletedAt is { } completed ? Time(completed) : DBNull.Value);
        command.Parameters.AddWithValue("$webhook", (object?)p.Webhook ?? DBNull.Value);
        command.Parameters.AddWithValue("$webhook_events", JsonSerializer.Serialize(p.WebhookEvents));
        command.Parameters.AddWithValue("$base_url", p.BaseUrl);
    }

    private static PredictionView Read(SqliteDataReader r) => new()
    {
        Id = r.GetString(0),
        Kind = r.GetString(1),
        Model = r.GetString(2),
        Version = r.IsDBNull(3) ? null : r.GetString(3),
        Status = r.GetString(4),
        Input = r.GetString(5),
        Output = r.IsDBNull(6) ? null : JsonSerializer.Deserialize<List<string>>(r.GetString(6)),
        Error = r.IsDBNull(7) ? null : r.GetString(7),
        Logs = r.GetString(8),
        Metrics = r.IsDBNull(9) ? null : JsonSerializer.Deserialize<Dictionary<string, double>>(r.GetString(9)),
        CreatedAt = ParseTime(r.GetString(10)),
        StartedAt = r.IsDBNull(11) ? null : ParseTime(r.GetString(11)),
        CompletedAt = r.IsDBNull(12) ? null : ParseTime(r.GetString(12)),
        Webhook = r.IsDBNull(13) ? null : r.GetString(13),
        WebhookEvents = r.IsDBNull(14) ? [] : JsonSerializer.Deserialize<List<string>>(r.GetString(14)) ?? [],
        BaseUrl = r.GetString(15),
    };

    /// <summary>ISO 8601 in UTC with microseconds, as Replicate writes times (and sortable as text).</summary>
    public static string Time(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);

    private static DateTimeOffset ParseTime(string text) =>
        DateTimeOffset.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);
}
