using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Sqlite;

namespace FluxNative.Server;

/// <summary>
/// Predictions in an SQLite database (one file, WAL journal): inserted before a prediction is acknowledged, updated at
/// every status change, so a restart finds every prediction ever accepted.
/// </summary>
internal sealed class PredictionStore : IDisposable
{
    private const string Columns =
        "id, kind, model, version, status, input, output, error, logs, metrics, created_at, started_at, completed_at, webhook, webhook_events, base_url";

    private readonly object gate = new();
    private readonly SqliteConnection connection;

    public PredictionStore(string path)
    {
        string full = Path.GetFullPath(path);
        if (Path.GetDirectoryName(full) is { } directory)
        {
            Directory.CreateDirectory(directory);
        }

        connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = full,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
        }.ToString());
        try
        {
            connection.Open();
            Execute("PRAGMA journal_mode=WAL;");
            Execute("PRAGMA synchronous=NORMAL;");
            Execute("PRAGMA busy_timeout=5000;");
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
                """);
        }
        catch (SqliteException e)
        {
            connection.Dispose();
            throw new FluxServerConfigurationException($"Cannot open the database '{full}': {e.Message}");
        }
    }

    public void Insert(PredictionView p)
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = $"INSERT INTO predictions ({Columns}) VALUES " +
                "($id, $kind, $model, $version, $status, $input, $output, $error, $logs, $metrics, $created_at, $started_at, $completed_at, $webhook, $webhook_events, $base_url);";
            Bind(command, p);
            command.ExecuteNonQuery();
        }
    }

    public void Update(PredictionView p)
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = "UPDATE predictions SET status = $status, output = $output, error = $error, logs = $logs, metrics = $metrics, " +
                "started_at = $started_at, completed_at = $completed_at WHERE id = $id;";
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

    /// <summary>The newest predictions first, <paramref name="limit"/> of them, older than the one with id <paramref name="before"/> when given.</summary>
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

    /// <summary>Predictions that were accepted or running when the last process ended, without finishing.</summary>
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

    public int Count(string status)
    {
        lock (gate)
        {
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = "SELECT COUNT(*) FROM predictions WHERE status = $status;";
            command.Parameters.AddWithValue("$status", status);
            return Convert.ToInt32(command.ExecuteScalar(), CultureInfo.InvariantCulture);
        }
    }

    /// <summary>The setting <paramref name="key"/>, created with <paramref name="create"/> the first time.</summary>
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

            string created = create();
            using SqliteCommand insert = connection.CreateCommand();
            insert.CommandText = "INSERT INTO settings (key, value) VALUES ($key, $value);";
            insert.Parameters.AddWithValue("$key", key);
            insert.Parameters.AddWithValue("$value", created);
            insert.ExecuteNonQuery();
            return created;
        }
    }

    public void Dispose()
    {
        lock (gate)
        {
            connection.Dispose();
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
