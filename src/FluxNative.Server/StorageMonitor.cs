using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace FluxNative.Server;

/// <summary>
/// Lives with storage faults (a full disk, a read-only or locked database, a deleted data folder) so that each fails
/// only the request it concerns and none stops the server:
/// <list type="bullet">
/// <item>a prediction whose record cannot be inserted is not accepted: 503 with the reason;</item>
/// <item>a finished prediction whose final state cannot be written keeps it here, in memory: it is answered from
/// here (get, list, wait, stream and webhooks as usual), written again every second until the database takes it, and
/// once more at shutdown; one that never could be is named in the log, and a restart reports it failed as
/// interrupted (its images are in the output folder);</item>
/// <item>a state on the way (processing) that cannot be written is not kept: the final write carries it;</item>
/// <item>while the database or the output folder cannot be written, <see cref="Problem"/> says why (<c>/readyz</c>
/// answers 503 with it); a probe write every second finds when they can again (every 30 s while all is well);</item>
/// <item>a database file deleted under the server (with its folder, say) is noticed within seconds and written back
/// from the still-open connection, so that a restart does not find an empty database.</item>
/// </list>
/// </summary>
internal sealed class StorageMonitor(IPredictionStore store, OutputFiles files, ILogger<StorageMonitor> logger) : BackgroundService
{
    /// <summary>How often the database file is checked to be where it was opened (no write).</summary>
    private int failures;

    internal static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(2);

    /// <summary>How often a write is tried while something cannot be written, or finished predictions wait to be saved.</summary>
    internal static readonly TimeSpan RetryInterval = TimeSpan.FromSeconds(1);

    /// <summary>How often a write is tried while all is well: faults between predictions show in readiness too.</summary>
    internal static readonly TimeSpan ProbeInterval = TimeSpan.FromSeconds(30);

    private readonly ConcurrentDictionary<string, PredictionView> unsaved = new(StringComparer.Ordinal);
    private readonly object checkGate = new();
    private volatile string? databaseProblem;
    private volatile string? outputProblem;

    /// <summary>Why predictions cannot be stored now (the database, else the output folder), or null when they can.</summary>
    public string? Problem => databaseProblem ?? outputProblem;

    /// <summary>Finished predictions whose final state is only in memory, waiting for the database.</summary>
    public int UnsavedCount => unsaved.Count;

    /// <summary>The final state of a finished prediction that is not in the database yet, or null.</summary>
    public PredictionView? Unsaved(string id) => unsaved.GetValueOrDefault(id);

    /// <summary>
    /// Errors the storage throws (a full disk, no permission, a locked, moved or broken database, a database server that
    /// is down or cannot be reached), as opposed to bugs.
    /// </summary>
    public static bool IsStorageFault(Exception e) => e is SqliteException or NpgsqlException or IOException or UnauthorizedAccessException;

    /// <summary>A storage error in plain words, with the system's own message.</summary>
    public static string Describe(Exception e)
    {
        string? plain = e switch
        {
            SqliteException { SqliteExtendedErrorCode: 1032 } => "the database file was deleted or moved while the server ran",   // SQLITE_READONLY_DBMOVED
            SqliteException { SqliteErrorCode: 13 } => "the disk is full",                                   // SQLITE_FULL
            SqliteException { SqliteErrorCode: 8 } => "the database is read-only",                           // SQLITE_READONLY
            SqliteException { SqliteErrorCode: 5 or 6 } => "the database is locked by another connection",   // SQLITE_BUSY, SQLITE_LOCKED
            SqliteException { SqliteErrorCode: 14 } => "the database file cannot be opened or created",      // SQLITE_CANTOPEN
            SqliteException { SqliteErrorCode: 26 } => "the file is not an SQLite database",                 // SQLITE_NOTADB
            SqliteException { SqliteErrorCode: 11 } => "the database file is corrupt",                       // SQLITE_CORRUPT
            SqliteException { SqliteErrorCode: 10 } => "a disk I/O error",                                   // SQLITE_IOERR
            UnauthorizedAccessException => "no permission",
            PostgresException { SqlState: "57P01" or "57P02" or "57P03" } => "the database server is shutting down or starting up",
            PostgresException { SqlState: "53100" } => "the database server's disk is full",
            PostgresException { SqlState: "25006" } => "the database server is read-only (a standby)",
            PostgresException { SqlState: "28P01" or "28000" } => "the database server refused the credentials",
            PostgresException { SqlState: "3D000" } => "the database does not exist on the server",
            PostgresException { SqlState: "53300" } => "the database server has no free connection",
            NpgsqlException { InnerException: TimeoutException } => "the database server did not answer in time",
            NpgsqlException { InnerException: System.Net.Sockets.SocketException } => "the database server cannot be reached",
            NpgsqlException { InnerException: IOException or EndOfStreamException } => "the connection to the database server was lost",
            _ => null,
        };
        string message = e.Message.TrimEnd('.');
        return plain is null ? message : $"{plain} ({message})";
    }

    /// <summary>Inserts a new prediction's record.</summary>
    /// <exception cref="ApiException">503 with the reason when it cannot be stored (the prediction is then not accepted).</exception>
    public void Insert(PredictionView view)
    {
        int failuresBefore = Failures;
        try
        {
            store.Insert(view);
        }
        catch (Exception e) when (IsStorageFault(e))
        {
            DatabaseFailed(e);
            throw Unavailable("The prediction could not be stored, so it was not accepted", e);
        }

        DatabaseWorks(failuresBefore);
    }

    /// <summary>Puts a new prediction and its job on the shared queue (<see cref="IPredictionStore.Enqueue"/>).</summary>
    /// <exception cref="ApiException">503 with the reason when it cannot be stored (the prediction is then not accepted).</exception>
    public void Enqueue(PredictionView view, string batchKey, string spec)
    {
        int failuresBefore = Failures;
        try
        {
            store.Enqueue(view, batchKey, spec);
        }
        catch (Exception e) when (IsStorageFault(e))
        {
            DatabaseFailed(e);
            throw Unavailable("The prediction could not be stored, so it was not accepted", e);
        }

        DatabaseWorks(failuresBefore);
    }

    /// <summary>Writes a prediction's new state; false when it cannot be written now (a final state is then kept to retry).</summary>
    public bool Save(PredictionView view)
    {
        int failuresBefore = Failures;
        try
        {
            store.Update(view);
        }
        catch (Exception e) when (IsStorageFault(e))
        {
            DatabaseFailed(e);
            if (view.IsTerminal)
            {
                unsaved[view.Id] = view;
                logger.LogError("Prediction {Id} is {Status} but could not be saved ({Reason}); kept in memory, retried every {Seconds} s",
                    view.Id, view.Status, Describe(e), RetryInterval.TotalSeconds);
            }

            return false;
        }

        if (view.IsTerminal)
        {
            unsaved.TryRemove(view.Id, out _);
        }

        DatabaseWorks(failuresBefore);
        return true;
    }

    /// <summary>
    /// <see cref="Save"/> on a pool thread: the pipeline's threads call the progress handlers, and a write there (an
    /// fsync, or the wait for a locked database) would hold up every prediction of the batch. Order does not matter:
    /// the store never lets a state on the way replace a final one.
    /// </summary>
    public void SaveLater(PredictionView view) => ThreadPool.QueueUserWorkItem(state =>
    {
        try
        {
            Save(state);
        }
        catch (Exception e)
        {
            // Not a storage fault (Save takes those): the store closed at shutdown, say. An exception left on a pool
            // thread would end the process.
            logger.LogError(e, "Saving prediction {Id} failed", state.Id);
        }
    }, view, preferLocal: false);

    /// <summary>A read of the database.</summary>
    /// <exception cref="ApiException">503 with the reason when the database cannot be read now.</exception>
    public T Read<T>(Func<IPredictionStore, T> read)
    {
        try
        {
            return read(store);
        }
        catch (Exception e) when (IsStorageFault(e))
        {
            DatabaseFailed(e);
            throw Unavailable("The prediction database cannot be read now", e);
        }
    }

    /// <summary>The images of a prediction could not be written (that prediction fails): readiness says so until a probe can write there.</summary>
    public void OutputFailed(Exception e)
    {
        string problem = $"The output folder '{files.Directory}' cannot be written: {Describe(e)}.";
        if (outputProblem != problem)
        {
            logger.LogError("{Problem}", problem);
        }

        outputProblem = problem;
    }

    /// <summary>
    /// Checks the storage now: writes the database file back if it was deleted, and with <paramref name="write"/> tries
    /// a write to the database (then saves the finished predictions waiting for it) and to the output folder.
    /// </summary>
    public void Check(bool write)
    {
        lock (checkGate)
        {
            bool missing = store.IsDeleted;
            try
            {
                if (store.RestoreIfDeleted())
                {
                    logger.LogWarning("The database file '{Path}' was deleted while the server ran; it was written back from the open database", store.Location);
                }

                if (write)
                {
                    int failuresBefore = Failures;
                    store.Probe();
                    SaveUnsaved();
                    DatabaseWorks(failuresBefore);
                }
            }
            catch (Exception e) when (IsStorageFault(e))
            {
                DatabaseFailed(e, missing
                    ? $"The database file '{store.Location}' was deleted while the server ran, and cannot be written back yet (predictions are kept in memory until it can): {Describe(e)}."
                    : null);
            }

            if (write || outputProblem is not null)
            {
                try
                {
                    files.Probe();
                    if (outputProblem is not null)
                    {
                        logger.LogInformation("The output folder '{Directory}' can be written again", files.Directory);
                        outputProblem = null;
                    }
                }
                catch (Exception e) when (IsStorageFault(e))
                {
                    OutputFailed(e);
                }
            }
        }
    }

    /// <summary>At shutdown: one more try to save the finished predictions kept in memory; those that still cannot be are named in the log.</summary>
    public void SaveBeforeExit()
    {
        if (unsaved.IsEmpty)
        {
            return;
        }

        try
        {
            SaveUnsaved();
        }
        catch (Exception e) when (IsStorageFault(e))
        {
            logger.LogError("{Count} finished prediction(s) could not be saved before exit ({Reason}): {Ids}. After a restart they show as failed (interrupted); their images are in {Directory}.",
                unsaved.Count, Describe(e), string.Join(", ", unsaved.Keys), files.Directory);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var clock = Stopwatch.StartNew();
        TimeSpan lastWrite = TimeSpan.Zero;
        while (true)
        {
            bool failing = Problem is not null || !unsaved.IsEmpty;
            try
            {
                await Task.Delay(failing ? RetryInterval : CheckInterval, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            bool write = failing || clock.Elapsed - lastWrite >= ProbeInterval;
            if (write)
            {
                lastWrite = clock.Elapsed;
            }

            try
            {
                Check(write);
            }
            catch (Exception e)
            {
                // Not a storage fault (Check takes those): a background service that throws stops the host.
                logger.LogError(e, "The storage check failed");
            }
        }
    }

    private void SaveUnsaved()
    {
        foreach ((string id, PredictionView view) in unsaved)
        {
            store.Update(view);
            unsaved.TryRemove(KeyValuePair.Create(id, view));
            logger.LogInformation("Prediction {Id} ({Status}) is saved now", id, view.Status);
        }
    }

    /// <summary>Failed database operations so far: a write that succeeds clears the problem only if none failed while it ran.</summary>
    private int Failures => Volatile.Read(ref failures);

    /// <summary>
    /// A write that started when <paramref name="failuresBefore"/> failures had been seen succeeded: the database works,
    /// unless another operation failed meanwhile (a slow write begun before a fault must not hide the fault).
    /// </summary>
    private void DatabaseWorks(int failuresBefore)
    {
        if (databaseProblem is not null && Failures == failuresBefore)
        {
            databaseProblem = null;
            logger.LogInformation("The database '{Path}' can be written again", store.Location);
        }
    }

    private void DatabaseFailed(Exception e, string? problem = null)
    {
        Interlocked.Increment(ref failures);
        problem ??= $"The database '{store.Location}' cannot be used: {Describe(e)}.";
        if (databaseProblem != problem)
        {
            logger.LogError("{Problem}", problem);
        }

        databaseProblem = problem;
    }

    private static ApiException Unavailable(string what, Exception e) =>
        new(StatusCodes.Status503ServiceUnavailable, $"{what}: the server's storage is failing, {Describe(e)}. Try again later.") { RetryAfterSeconds = 5 };
}
