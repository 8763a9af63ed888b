using System.Diagnostics;
using FluxNative.Testing;

namespace FluxNative.Server.Tests;

/// <summary>The kinds of <see cref="IPredictionStore"/>: every contract test runs on each (PostgreSQL's skipped, with the reason, without a test server).</summary>
public enum StoreKind
{
    Sqlite,
    Postgres,
}

/// <summary>
/// One contract for every <see cref="IPredictionStore"/>: what the SQLite file and PostgreSQL each must do the same, on a
/// real database (a temp SQLite file; a fresh database on the test PostgreSQL server).
/// </summary>
public sealed class PredictionStoreContractTests
{
    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_prediction_reads_back_as_it_was_written(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var store = database.Open();
        PredictionView full = Sample("full00000001", DateTimeOffset.UtcNow) with
        {
            Version = "v1",
            Status = PredictionStatus.Succeeded,
            Output = ["out-0.webp", "out-1.webp"],
            Error = "not really, but every column is set",
            Logs = "line one\nline two ünïcødé\n",
            Metrics = new Dictionary<string, double> { ["predict_time"] = 1.25, ["image_count"] = 2 },
            StartedAt = DateTimeOffset.UtcNow.AddSeconds(1),
            CompletedAt = DateTimeOffset.UtcNow.AddSeconds(2),
            Webhook = "https://example.com/hook",
            WebhookEvents = ["start", "completed"],
        };
        PredictionView bare = Sample("bare00000001", DateTimeOffset.UtcNow);
        store.Value.Insert(full);
        store.Value.Insert(bare);

        AssertSame(full, store.Value.Get(full.Id));
        AssertSame(bare, store.Value.Get(bare.Id));
        Assert.Null(store.Value.Get("nosuchid0000"));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_late_state_on_the_way_never_replaces_a_final_one(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var store = database.Open();
        PredictionView p = Sample("late00000001", DateTimeOffset.UtcNow);
        store.Value.Insert(p);
        PredictionView processing = p with { Status = PredictionStatus.Processing, StartedAt = DateTimeOffset.UtcNow, Logs = "step 1\n" };
        store.Value.Update(processing);
        AssertSame(processing, store.Value.Get(p.Id));

        PredictionView done = processing with { Status = PredictionStatus.Succeeded, Output = ["out-0.png"], CompletedAt = DateTimeOffset.UtcNow, Logs = "step 1\ndone\n" };
        store.Value.Update(done);
        store.Value.Update(processing with { Logs = "a late progress write\n" });
        AssertSame(done, store.Value.Get(p.Id));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void The_list_is_newest_first_in_pages_after_a_cursor(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var store = database.Open();
        DateTimeOffset start = DateTimeOffset.UtcNow;
        for (int i = 0; i < 5; i++)
        {
            store.Value.Insert(Sample($"list0000000{i}", start.AddMilliseconds(i)));
        }

        Assert.Equal(["list00000004", "list00000003"], store.Value.List(2, null).Select(v => v.Id));
        Assert.Equal(["list00000002", "list00000001"], store.Value.List(2, "list00000003").Select(v => v.Id));
        Assert.Equal(["list00000000"], store.Value.List(10, "list00000001").Select(v => v.Id));
        Assert.Empty(store.Value.List(10, "list00000000"));
        Assert.Empty(store.Value.List(10, "nosuchcursor"));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void Unfinished_predictions_are_the_starting_and_processing_ones_in_order(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var store = database.Open();
        string[] statuses = [PredictionStatus.Processing, PredictionStatus.Succeeded, PredictionStatus.Starting, PredictionStatus.Failed, PredictionStatus.Canceled, PredictionStatus.Starting];
        DateTimeOffset start = DateTimeOffset.UtcNow;
        for (int i = 0; i < statuses.Length; i++)
        {
            // Created in the reverse order of insertion: the order is the insertion's, not the clock's.
            store.Value.Insert(Sample($"todo0000000{i}", start.AddSeconds(-i)) with { Status = statuses[i] });
        }

        Assert.Equal(["todo00000000", "todo00000002", "todo00000005"], store.Value.Unfinished().Select(v => v.Id));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_setting_is_made_once_kept_across_a_reopen_and_never_made_over_predictions(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        int made = 0;
        using (var store = database.Open())
        {
            Assert.Equal("first", store.Value.GetOrCreateSetting("url_signing_key", () => { made++; return "first"; }));
            Assert.Equal("first", store.Value.GetOrCreateSetting("url_signing_key", () => { made++; return "second"; }));
            store.Value.Insert(Sample("kept00000001", DateTimeOffset.UtcNow));
            store.Value.Probe();
        }

        using (var reopened = database.Open())
        {
            Assert.Equal("first", reopened.Value.GetOrCreateSetting("url_signing_key", () => { made++; return "third"; }));
            Assert.NotNull(reopened.Value.Get("kept00000001"));
            var refused = Assert.Throws<FluxServerConfigurationException>(() => reopened.Value.GetOrCreateSetting("webhook_secret", () => "new"));
            Assert.Contains("holds 1 prediction(s) but no webhook_secret", refused.Message, StringComparison.Ordinal);
            Assert.False(reopened.Value.IsDeleted);
        }

        Assert.Equal(1, made);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_duplicate_id_is_a_storage_fault_not_a_silent_overwrite(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var store = database.Open();
        PredictionView p = Sample("dupe00000001", DateTimeOffset.UtcNow);
        store.Value.Insert(p);
        Exception e = Assert.ThrowsAny<Exception>(() => store.Value.Insert(p with { Input = "{}" }));
        Assert.True(StorageMonitor.IsStorageFault(e), e.ToString());
        AssertSame(p, store.Value.Get(p.Id));
    }

    [Fact]
    public void A_postgres_address_becomes_npgsql_settings_and_is_shown_without_its_password()
    {
        var settings = PostgresPredictionStore.ConnectionSettings("postgresql://fl%40ux:p%3Ass@db.example:6543/flux%20db?sslmode=require&Maximum%20Pool%20Size=7");
        Assert.Equal("fl@ux", settings.Username);
        Assert.Equal("p:ss", settings.Password);
        Assert.Equal("db.example", settings.Host);
        Assert.Equal(6543, settings.Port);
        Assert.Equal("flux db", settings.Database);
        Assert.Equal(Npgsql.SslMode.Require, settings.SslMode);
        Assert.Equal(7, settings.MaxPoolSize);
        Assert.Equal(5, settings.Timeout);   // fails fast by default
        Assert.Equal("postgres://fl%40ux@db.example:6543/flux db", PostgresPredictionStore.Describe(settings));
        Assert.Equal(5432, PostgresPredictionStore.ConnectionSettings("postgres://db.example/flux").Port);

        var unknown = Assert.Throws<FluxServerConfigurationException>(() => PostgresPredictionStore.ConnectionSettings("postgres://u:secret@h/d?frobnicate=1"));
        Assert.Contains("frobnicate", unknown.Message, StringComparison.Ordinal);
        var bad = Assert.Throws<FluxServerConfigurationException>(() => PostgresPredictionStore.ConnectionSettings("postgres://u:secret@/d"));
        Assert.DoesNotContain("secret", bad.Message, StringComparison.Ordinal);
        Assert.True(PostgresPredictionStore.IsAddress("POSTGRES://h/d"));
        Assert.False(PostgresPredictionStore.IsAddress("/data/postgres.db"));
    }

    [Fact]
    public void A_database_server_that_cannot_be_reached_stops_the_start_within_seconds_saying_why()
    {
        int port = ClosedPort();
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<FluxServerConfigurationException>(() => new PostgresPredictionStore($"postgres://flux:secret@127.0.0.1:{port}/flux"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
        Assert.Contains("the database server cannot be reached", e.Message, StringComparison.Ordinal);
        Assert.Contains($"postgres://flux@127.0.0.1:{port}/flux", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("secret", e.Message, StringComparison.Ordinal);
    }

    /// <summary>A loopback port nothing listens on (taken, then released).</summary>
    internal static int ClosedPort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    internal static PredictionView Sample(string id, DateTimeOffset created) => new()
    {
        Id = id,
        Kind = PredictionKind.Replicate,
        Model = "black-forest-labs/flux-dev",
        Status = PredictionStatus.Starting,
        Input = """{"prompt":"a red fox"}""",
        CreatedAt = created,
        BaseUrl = "http://127.0.0.1:8080",
    };

    /// <summary>Every field equal, times to the microsecond (what both databases keep).</summary>
    internal static void AssertSame(PredictionView expected, PredictionView? actual)
    {
        Assert.NotNull(actual);
        Assert.Equal(expected.Id, actual.Id);
        Assert.Equal(expected.Kind, actual.Kind);
        Assert.Equal(expected.Model, actual.Model);
        Assert.Equal(expected.Version, actual.Version);
        Assert.Equal(expected.Status, actual.Status);
        Assert.Equal(expected.Input, actual.Input);
        Assert.Equal(expected.Output, actual.Output);
        Assert.Equal(expected.Error, actual.Error);
        Assert.Equal(expected.Logs, actual.Logs);
        Assert.Equal(expected.Metrics?.OrderBy(m => m.Key), actual.Metrics?.OrderBy(m => m.Key));
        Assert.Equal(Microseconds(expected.CreatedAt), Microseconds(actual.CreatedAt));
        Assert.Equal(Microseconds(expected.StartedAt), Microseconds(actual.StartedAt));
        Assert.Equal(Microseconds(expected.CompletedAt), Microseconds(actual.CompletedAt));
        Assert.Equal(expected.Webhook, actual.Webhook);
        Assert.Equal(expected.WebhookEvents, actual.WebhookEvents);
        Assert.Equal(expected.BaseUrl, actual.BaseUrl);
    }

    private static long? Microseconds(DateTimeOffset? time) => time?.UtcTicks / 10;
}

/// <summary>A fresh database of one kind: a temp SQLite file, or a database of its own on the test PostgreSQL server.</summary>
internal sealed class TestDatabase : IDisposable
{
    private readonly TempDirectory? folder;
    private readonly TestPostgres? postgres;

    public TestDatabase(StoreKind kind)
    {
        if (kind == StoreKind.Postgres)
        {
            postgres = TestPostgres.Create();
            Address = postgres.Address;
        }
        else
        {
            folder = new TempDirectory();
            Address = folder.File("flux.db");
        }
    }

    /// <summary>What <c>--database</c> would be given.</summary>
    public string Address { get; }

    /// <summary>Opens a store on it (disposed with the holder).</summary>
    public Owned Open() => new(FluxServer.OpenStore(new FluxServerOptions { DatabasePath = Address }));

    public void Dispose()
    {
        postgres?.Dispose();
        folder?.Dispose();
    }

    internal sealed class Owned(IPredictionStore store) : IDisposable
    {
        public IPredictionStore Value { get; } = store;

        public void Dispose() => (Value as IDisposable)?.Dispose();
    }
}
