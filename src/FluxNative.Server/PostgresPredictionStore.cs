using System.Text.Json;
using Npgsql;
using NpgsqlTypes;

namespace FluxNative.Server;

/// <summary>
/// Predictions in PostgreSQL (<c>flux serve --database postgres://…</c>): the store several nodes share. The same tables
/// and rules as the SQLite <see cref="PredictionStore"/> (a state on the way never replaces a final one; keys are never
/// made over existing predictions), held to the same contract tests.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Connections come from Npgsql's pool (one <see cref="NpgsqlDataSource"/>): a connection the server closed (a
/// restart of PostgreSQL) fails the statement it was given, is dropped, and the next one opens afresh, so a node
/// recovers by itself when the database comes back.</item>
/// <item>Short timeouts unless the address sets its own (<c>Timeout</c> 5 s to connect, <c>Command Timeout</c> 15 s):
/// a database that is down fails a request at once (the connection is refused), one that cannot be reached within
/// 5 s, as a 503 with the reason.</item>
/// <item>Every command is one statement (see <see cref="Enqueue"/> for why).</item>
/// <item>The schema is created under a transaction-scoped advisory lock: nodes starting together do not race on
/// <c>CREATE TABLE IF NOT EXISTS</c> (which is not safe against a concurrent create), nor on the first keys.</item>
/// </list>
/// </remarks>
internal sealed partial class PostgresPredictionStore : IPredictionStore, IDisposable
{
    private const string Columns =
        "id, kind, model, version, status, input, output, error, logs, metrics, created_at, started_at, completed_at, webhook, webhook_events, base_url";

    /// <summary>The LISTEN/NOTIFY channel: every insert and state write of a prediction notifies its id.</summary>
    private const string Channel = "flux_predictions";

    private const string InsertSql = $"INSERT INTO predictions ({Columns}) VALUES " +
        "(@id, @kind, @model, @version, @status, @input, @output, @error, @logs, @metrics, @created_at, @started_at, @completed_at, @webhook, @webhook_events, @base_url);";

    /// <summary>The advisory lock taken while the schema and the first keys are made (any fixed number; "flux" in ASCII).</summary>
    private const long SchemaLock = 0x666C7578;

    private static readonly string Terminal = $"('{PredictionStatus.Succeeded}', '{PredictionStatus.Failed}', '{PredictionStatus.Canceled}')";

    private readonly NpgsqlDataSource dataSource;

    /// <summary>Connects to <paramref name="address"/> (a <c>postgres://</c> URI), creates the tables when missing, and checks that it can write.</summary>
    /// <exception cref="FluxServerConfigurationException">A bad address, or a database that cannot be reached, read or written; the message says why, in one line.</exception>
    public PostgresPredictionStore(string address)
    {
        NpgsqlConnectionStringBuilder settings = ConnectionSettings(address);
        Location = Describe(settings);
        dataSource = NpgsqlDataSource.Create(settings);
        try
        {
            using NpgsqlConnection connection = dataSource.OpenConnection();
            using NpgsqlTransaction transaction = connection.BeginTransaction();
            Execute(connection, $"SELECT pg_advisory_xact_lock({SchemaLock});");
            Execute(connection, """
                CREATE TABLE IF NOT EXISTS predictions (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
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
                    created_at TIMESTAMPTZ NOT NULL,
                    started_at TIMESTAMPTZ,
                    completed_at TIMESTAMPTZ,
                    webhook TEXT,
                    webhook_events TEXT,
                    base_url TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS predictions_created ON predictions (created_at, seq);
                CREATE INDEX IF NOT EXISTS predictions_unfinished ON predictions (seq) WHERE status IN ('starting', 'processing');
                CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS jobs (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
                    prediction_id TEXT PRIMARY KEY REFERENCES predictions (id),
                    batch_key TEXT NOT NULL,
                    spec TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    leased_at TIMESTAMPTZ,
                    lease_expires TIMESTAMPTZ,
                    abort_status TEXT,
                    abort_error TEXT);
                """);
            Execute(connection, OutboxSchema);
            transaction.Commit();
            Probe();
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            dataSource.Dispose();
            throw new FluxServerConfigurationException($"Cannot use the database '{Location}': {StorageMonitor.Describe(e)}");
        }
    }

    public string Location { get; }

    public bool IsDeleted => false;

    /// <summary>Whether <paramref name="database"/> (a <c>--database</c> value) names a PostgreSQL database rather than an SQLite file.</summary>
    public static bool IsAddress(string database) =>
        database.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase) || database.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Npgsql's settings from a libpq-style URI, <c>postgres://USER:PASSWORD@HOST:PORT/DATABASE?KEY=VALUE&amp;…</c>: user,
    /// password and database percent-decoded, the query's keys given to Npgsql as they are (<c>sslmode=require</c>,
    /// <c>Timeout=10</c>, <c>Maximum Pool Size=50</c>; any Npgsql keyword).
    /// </summary>
    /// <exception cref="FluxServerConfigurationException">Not such a URI, or a key Npgsql does not know.</exception>
    public static NpgsqlConnectionStringBuilder ConnectionSettings(string address)
    {
        if (!IsAddress(address) || !Uri.TryCreate(address, UriKind.Absolute, out Uri? uri) || uri.Host.Length == 0)
        {
            throw new FluxServerConfigurationException(
                $"'{Redact(address)}' is not a PostgreSQL address: postgres://USER:PASSWORD@HOST:PORT/DATABASE (or a path, for an SQLite file).");
        }

        var settings = new NpgsqlConnectionStringBuilder
        {
            Host = uri.Host,
            Port = uri.IsDefaultPort || uri.Port < 0 ? 5432 : uri.Port,
            Timeout = 5,
            CommandTimeout = 15,
        };
        if (uri.UserInfo.Length > 0)
        {
            string[] user = uri.UserInfo.Split(':', 2);
            settings.Username = Uri.UnescapeDataString(user[0]);
            if (user.Length == 2)
            {
                settings.Password = Uri.UnescapeDataString(user[1]);
            }
        }

        string database = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        if (database.Length > 0)
        {
            settings.Database = database;
        }

        foreach (string pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] parts = pair.Split('=', 2);
            string key = Uri.UnescapeDataString(parts[0].Replace('+', ' '));
            string value = parts.Length == 2 ? Uri.UnescapeDataString(parts[1].Replace('+', ' ')) : string.Empty;
            try
            {
                settings[key] = value;
            }
            catch (Exception e) when (e is ArgumentException or FormatException or InvalidCastException)
            {
                throw new FluxServerConfigurationException($"The PostgreSQL address has a setting Npgsql does not take: '{key}={value}' ({e.Message.TrimEnd('.')}).");
            }
        }

        return settings;
    }

    public void Insert(PredictionView p)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new(InsertSql, connection);
        Bind(command, p);
        command.ExecuteNonQuery();
    }

    public void Update(PredictionView p)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new("WITH changed AS (UPDATE predictions SET status = @status, output = @output, error = @error, logs = @logs, metrics = @metrics, " +
            "started_at = @started_at, completed_at = @completed_at WHERE id = @id" + (p.IsTerminal ? string.Empty : $" AND status NOT IN {Terminal}") +
            $" RETURNING id) SELECT pg_notify('{Channel}', id) FROM changed;", connection);
        Bind(command, p);
        command.ExecuteNonQuery();
    }

    public PredictionView? Get(string id)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new($"SELECT {Columns} FROM predictions WHERE id = @id;", connection);
        command.Parameters.AddWithValue("id", id);
        using NpgsqlDataReader reader = command.ExecuteReader();
        return reader.Read() ? Read(reader) : null;
    }

    public IReadOnlyList<PredictionView> List(int limit, string? before)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new(before is null
            ? $"SELECT {Columns} FROM predictions ORDER BY created_at DESC, seq DESC LIMIT @limit;"
            : $"SELECT {Columns} FROM predictions WHERE seq < (SELECT seq FROM predictions WHERE id = @before) ORDER BY created_at DESC, seq DESC LIMIT @limit;",
            connection);
        command.Parameters.AddWithValue("limit", limit);
        if (before is not null)
        {
            command.Parameters.AddWithValue("before", before);
        }

        return ReadAll(command);
    }

    public IReadOnlyList<PredictionView> Unfinished()
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new(
            $"SELECT {Columns} FROM predictions WHERE status IN ('{PredictionStatus.Starting}', '{PredictionStatus.Processing}') ORDER BY seq;", connection);
        return ReadAll(command);
    }

    public string GetOrCreateSetting(string key, Func<string> create)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction transaction = connection.BeginTransaction();
        // Two nodes starting together must end up with one key: the lock makes the second wait, then read the first's.
        Execute(connection, $"SELECT pg_advisory_xact_lock({SchemaLock});");
        using (NpgsqlCommand select = new("SELECT value FROM settings WHERE key = @key;", connection))
        {
            select.Parameters.AddWithValue("key", key);
            if (select.ExecuteScalar() is string value)
            {
                transaction.Commit();
                return value;
            }
        }

        using (NpgsqlCommand count = new("SELECT COUNT(*) FROM predictions;", connection))
        {
            long predictions = (long)count.ExecuteScalar()!;
            if (predictions > 0)
            {
                throw PredictionStore.MissingSetting(Location, key, predictions);
            }
        }

        string created = create();
        using (NpgsqlCommand insert = new("INSERT INTO settings (key, value) VALUES (@key, @value);", connection))
        {
            insert.Parameters.AddWithValue("key", key);
            insert.Parameters.AddWithValue("value", created);
            insert.ExecuteNonQuery();
        }

        transaction.Commit();
        return created;
    }

    public void Probe()
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new(
            "INSERT INTO settings (key, value) VALUES ('heartbeat', @now) ON CONFLICT (key) DO UPDATE SET value = excluded.value;", connection);
        command.Parameters.AddWithValue("now", PredictionStore.Time(DateTimeOffset.UtcNow));
        command.ExecuteNonQuery();
    }

    public bool RestoreIfDeleted() => false;

    public async Task ListenAsync(Action<string> changed, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await using NpgsqlConnection connection = await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
                connection.Notification += (_, e) => changed(e.Payload);
                await using (NpgsqlCommand listen = new($"LISTEN {Channel};", connection))
                {
                    await listen.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
                }

                while (true)
                {
                    await connection.WaitAsync(cancellationToken).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (StorageMonitor.IsStorageFault(e))
            {
                // The database went away: listen again once it is back (what changed meanwhile, the callers' reads find).
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    public void Enqueue(PredictionView p, string batchKey, string spec)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction transaction = connection.BeginTransaction();
        using (NpgsqlCommand insert = new(InsertSql, connection))
        {
            Bind(insert, p);
            insert.ExecuteNonQuery();
        }

        // One statement, as every command here: Npgsql sends a command of several statements from a pool thread when
        // called synchronously, and under a burst of requests (the pool's threads all blocked in such calls) the send
        // waited its turn past the command timeout: 60 creates at once stalled 15 s, the server waiting in ClientRead.
        using (NpgsqlCommand job = new($"WITH queued AS (INSERT INTO jobs (prediction_id, batch_key, spec) VALUES (@id, @key, @spec) RETURNING prediction_id) " +
            $"SELECT pg_notify('{Channel}', prediction_id) FROM queued;", connection))
        {
            job.Parameters.AddWithValue("id", p.Id);
            job.Parameters.AddWithValue("key", batchKey);
            job.Parameters.AddWithValue("spec", spec);
            job.ExecuteNonQuery();
        }

        transaction.Commit();
    }

    public IReadOnlyList<LeasedJob> Lease(string worker, int maxJobs, TimeSpan lease)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxJobs, 1);
        // One statement, one round trip: the oldest free job, then its batch companions, each row locked as it is
        // picked with the rows other workers' statements hold skipped (SKIP LOCKED): concurrent workers never wait on
        // each other nor lease one job twice. The database's clock decides expiry, so the nodes' clocks need not agree.
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new($"""
            WITH first AS (
                SELECT prediction_id, batch_key FROM jobs WHERE {FreeJob("jobs")} ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED),
            more AS (
                SELECT j.prediction_id FROM jobs j, first
                WHERE j.batch_key = first.batch_key AND j.prediction_id <> first.prediction_id AND {FreeJob("j")}
                ORDER BY j.seq LIMIT @more FOR UPDATE OF j SKIP LOCKED),
            taken AS (
                UPDATE jobs SET lease_owner = @worker, leased_at = clock_timestamp(), lease_expires = clock_timestamp() + @lease, attempts = attempts + 1
                WHERE prediction_id IN (SELECT prediction_id FROM first UNION ALL SELECT prediction_id FROM more)
                RETURNING prediction_id, batch_key, spec, attempts, seq)
            SELECT taken.batch_key, taken.attempts, taken.spec, {string.Join(", ", Columns.Split(", ").Select(c => "p." + c))}
            FROM taken JOIN predictions p ON p.id = taken.prediction_id ORDER BY taken.seq;
            """, connection);
        command.Parameters.AddWithValue("more", maxJobs - 1);
        command.Parameters.AddWithValue("worker", worker);
        command.Parameters.AddWithValue("lease", NpgsqlDbType.Interval, lease);
        using NpgsqlDataReader reader = command.ExecuteReader();
        var jobs = new List<LeasedJob>();
        while (reader.Read())
        {
            jobs.Add(new LeasedJob(Read(reader, offset: 3), reader.GetString(0), reader.GetInt32(1), reader.GetString(2)));
        }

        return jobs;
    }

    /// <summary>A job nobody holds: never leased, or its lease ran out.</summary>
    private static string FreeJob(string table) => $"({table}.lease_expires IS NULL OR {table}.lease_expires < clock_timestamp())";

    public LeaseRenewal Renew(string worker, IReadOnlyList<LeasedJob> jobs, TimeSpan lease)
    {
        var held = new List<string>();
        var aborts = new Dictionary<string, JobAbort>(StringComparer.Ordinal);
        if (jobs.Count == 0)
        {
            return new LeaseRenewal(held, aborts);
        }

        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand renew = new("UPDATE jobs SET lease_expires = clock_timestamp() + @lease FROM unnest(@ids, @attempts) AS held (id, attempt) " +
            "WHERE jobs.prediction_id = held.id AND jobs.attempts = held.attempt AND jobs.lease_owner = @worker " +
            "RETURNING jobs.prediction_id, jobs.abort_status, jobs.abort_error;", connection);
        renew.Parameters.AddWithValue("lease", NpgsqlDbType.Interval, lease);
        renew.Parameters.AddWithValue("ids", jobs.Select(j => j.Id).ToArray());
        renew.Parameters.AddWithValue("attempts", jobs.Select(j => j.Attempt).ToArray());
        renew.Parameters.AddWithValue("worker", worker);
        using NpgsqlDataReader reader = renew.ExecuteReader();
        while (reader.Read())
        {
            held.Add(reader.GetString(0));
            if (!reader.IsDBNull(1))
            {
                aborts[reader.GetString(0)] = new JobAbort(reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2));
            }
        }

        return new LeaseRenewal(held, aborts);
    }

    public AbortOutcome Abort(string id, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction transaction = connection.BeginTransaction();
        // A waiting job leaves the queue with its final state written; one a worker holds is marked for the worker's
        // heartbeat. A job being leased at this moment is waited for (its row is locked), then found held.
        using (NpgsqlCommand free = new($"""
            WITH freed AS (DELETE FROM jobs WHERE prediction_id = @id AND {FreeJob("jobs")} RETURNING prediction_id),
            recorded AS (
                UPDATE predictions SET status = @status, output = @output, error = @error, logs = @logs, metrics = @metrics,
                    started_at = @started_at, completed_at = @completed_at
                WHERE id = (SELECT prediction_id FROM freed) RETURNING id)
            SELECT pg_notify('{Channel}', id) FROM recorded;
            """, connection))
        {
            Bind(free, final);
            using NpgsqlDataReader reader = free.ExecuteReader();
            if (reader.Read())
            {
                reader.Close();
                InsertDeliveries(connection, deliveries);
                transaction.Commit();
                return AbortOutcome.Finished;
            }
        }

        using NpgsqlCommand mark = new("WITH marked AS (UPDATE jobs SET abort_status = @status, abort_error = @error WHERE prediction_id = @id RETURNING prediction_id) " +
            $"SELECT pg_notify('{Channel}', prediction_id) FROM marked;", connection);
        mark.Parameters.AddWithValue("id", id);
        mark.Parameters.AddWithValue("status", final.Status);
        mark.Parameters.AddWithValue("error", NpgsqlDbType.Text, (object?)final.Error ?? DBNull.Value);
        AbortOutcome outcome;
        using (NpgsqlDataReader reader = mark.ExecuteReader())
        {
            outcome = reader.Read() ? AbortOutcome.Requested : AbortOutcome.NoJob;
        }

        transaction.Commit();
        return outcome;
    }

    public bool Complete(string worker, LeasedJob job, PredictionView final, IReadOnlyList<WebhookDelivery>? deliveries = null)
    {
        if (!final.IsTerminal || final.Id != job.Id)
        {
            throw new ArgumentException($"Complete takes the final state of job {job.Id}, not a {final.Status} state of {final.Id}.", nameof(final));
        }

        // One statement: the job leaves the queue only for its lease's holder, and the outcome is written only when it
        // did, so of two workers that ran one job (one stalled past its lease) exactly one records.
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlTransaction? transaction = deliveries is { Count: > 0 } ? connection.BeginTransaction() : null;
        using NpgsqlCommand command = new($"""
            WITH taken AS (DELETE FROM jobs WHERE prediction_id = @id AND lease_owner = @worker AND attempts = @attempt RETURNING prediction_id),
            recorded AS (
                UPDATE predictions SET status = @status, output = @output, error = @error, logs = @logs, metrics = @metrics,
                    started_at = @started_at, completed_at = @completed_at
                WHERE id = (SELECT prediction_id FROM taken) RETURNING id)
            SELECT pg_notify('{Channel}', id) FROM recorded;
            """, connection);
        Bind(command, final);
        command.Parameters.AddWithValue("worker", worker);
        command.Parameters.AddWithValue("attempt", job.Attempt);
        bool recorded;
        using (NpgsqlDataReader reader = command.ExecuteReader())
        {
            recorded = reader.Read();
        }

        if (transaction is not null)
        {
            if (recorded)
            {
                InsertDeliveries(connection, deliveries);
            }

            transaction.Commit();
        }

        return recorded;
    }

    public QueueState Queue()
    {
        using NpgsqlConnection connection = dataSource.OpenConnection();
        using NpgsqlCommand command = new("""
            SELECT count(*) FILTER (WHERE lease_expires IS NULL OR lease_expires < clock_timestamp()),
                   count(*) FILTER (WHERE lease_expires >= clock_timestamp()),
                   count(DISTINCT lease_owner) FILTER (WHERE lease_expires >= clock_timestamp()),
                   max(clock_timestamp() - leased_at) FILTER (WHERE lease_expires >= clock_timestamp())
            FROM jobs;
            """, connection);
        using NpgsqlDataReader reader = command.ExecuteReader();
        reader.Read();
        return new QueueState((int)reader.GetInt64(0), (int)reader.GetInt64(1), (int)reader.GetInt64(2), reader.IsDBNull(3) ? null : reader.GetFieldValue<TimeSpan>(3));
    }

    public void Dispose() => dataSource.Dispose();

    /// <summary>The address without its password, as messages show it: <c>postgres://USER@HOST:PORT/DATABASE</c>.</summary>
    internal static string Describe(NpgsqlConnectionStringBuilder settings) =>
        $"postgres://{(settings.Username is { Length: > 0 } user ? Uri.EscapeDataString(user) + "@" : string.Empty)}{settings.Host}:{settings.Port}/{settings.Database}";

    /// <summary>An address as it may be shown: the password replaced.</summary>
    private static string Redact(string address) =>
        System.Text.RegularExpressions.Regex.Replace(address, "(://[^:/@]*:)[^@]*@", "$1***@");

    private static void Execute(NpgsqlConnection connection, string sql)
    {
        using NpgsqlCommand command = new(sql, connection);
        command.ExecuteNonQuery();
    }

    private static List<PredictionView> ReadAll(NpgsqlCommand command)
    {
        using NpgsqlDataReader reader = command.ExecuteReader();
        var list = new List<PredictionView>();
        while (reader.Read())
        {
            list.Add(Read(reader));
        }

        return list;
    }

    private static void Bind(NpgsqlCommand command, PredictionView p)
    {
        NpgsqlParameterCollection parameters = command.Parameters;
        parameters.AddWithValue("id", p.Id);
        parameters.AddWithValue("kind", p.Kind);
        parameters.AddWithValue("model", p.Model);
        parameters.AddWithValue("version", NpgsqlDbType.Text, (object?)p.Version ?? DBNull.Value);
        parameters.AddWithValue("status", p.Status);
        parameters.AddWithValue("input", p.Input);
        parameters.AddWithValue("output", NpgsqlDbType.Text, p.Output is null ? DBNull.Value : JsonSerializer.Serialize(p.Output));
        parameters.AddWithValue("error", NpgsqlDbType.Text, (object?)p.Error ?? DBNull.Value);
        parameters.AddWithValue("logs", p.Logs);
        parameters.AddWithValue("metrics", NpgsqlDbType.Text, p.Metrics is null ? DBNull.Value : JsonSerializer.Serialize(p.Metrics));
        parameters.AddWithValue("created_at", NpgsqlDbType.TimestampTz, p.CreatedAt.UtcDateTime);
        parameters.AddWithValue("started_at", NpgsqlDbType.TimestampTz, p.StartedAt is { } started ? started.UtcDateTime : DBNull.Value);
        parameters.AddWithValue("completed_at", NpgsqlDbType.TimestampTz, p.CompletedAt is { } completed ? completed.UtcDateTime : DBNull.Value);
        parameters.AddWithValue("webhook", NpgsqlDbType.Text, (object?)p.Webhook ?? DBNull.Value);
        parameters.AddWithValue("webhook_events", JsonSerializer.Serialize(p.WebhookEvents));
        parameters.AddWithValue("base_url", p.BaseUrl);
    }

    /// <summary>A prediction from the row's columns <see cref="Columns"/>, starting at column <paramref name="offset"/>.</summary>
    private static PredictionView Read(NpgsqlDataReader r, int offset = 0) => ReadColumns(new OffsetReader(r, offset));

    private static PredictionView ReadColumns(OffsetReader r) => new()
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
        CreatedAt = r.GetFieldValue<DateTimeOffset>(10),
        StartedAt = r.IsDBNull(11) ? null : r.GetFieldValue<DateTimeOffset>(11),
        CompletedAt = r.IsDBNull(12) ? null : r.GetFieldValue<DateTimeOffset>(12),
        Webhook = r.IsDBNull(13) ? null : r.GetString(13),
        WebhookEvents = r.IsDBNull(14) ? [] : JsonSerializer.Deserialize<List<string>>(r.GetString(14)) ?? [],
        BaseUrl = r.GetString(15),
    };

    /// <summary>The reader's columns from <paramref name="offset"/> on, numbered from 0.</summary>
    private readonly struct OffsetReader(NpgsqlDataReader reader, int offset)
    {
        public bool IsDBNull(int column) => reader.IsDBNull(offset + column);

        public string GetString(int column) => reader.GetString(offset + column);

        public T GetFieldValue<T>(int column) => reader.GetFieldValue<T>(offset + column);
    }
}
