namespace FluxNative.Server.Tests;

/// <summary>
/// The webhook outbox's contract, on each store (<see cref="PredictionStoreContractTests"/>): one row per event, leased
/// by one node at a time, its attempts counted, due again after a retry's delay, final when delivered or failed for
/// good, pruned when old, and written with a job's outcome only when that outcome is recorded. "Nodes" are store instances of their own
/// (for PostgreSQL each has its own connection pool, as separate processes have).
/// </summary>
public sealed class WebhookOutboxContractTests
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(5);

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_delivery_is_leased_by_one_node_at_a_time_and_retried_with_its_attempts_counted_until_delivered(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var one = database.Open();
        using var two = database.Open();
        PredictionView p = Hooked("hook00000001");
        WebhookDelivery completed = Assert.Single(WebhookDispatcher.For(p, """{"status":"succeeded"}""", "completed"));
        WebhookDelivery start = Assert.Single(WebhookDispatcher.For(p, """{"status":"processing"}""", "start"));
        one.Value.AddDeliveries([start, completed]);
        one.Value.AddDeliveries([completed with { Body = "a second write of the same event" }]);   // the same id: left as it was
        Assert.Equal(new OutboxState(2, 2, 0), two.Value.Outbox());

        IReadOnlyList<WebhookDelivery> leased = one.Value.LeaseDeliveries("node-1", 10, Long);
        Assert.Equal([start.Id, completed.Id], leased.Select(d => d.Id));
        Assert.Equal((p.Id, "completed", p.Webhook, """{"status":"succeeded"}""", 1),
            (leased[1].PredictionId, leased[1].Event, leased[1].Url, leased[1].Body, leased[1].Attempt));
        Assert.Empty(two.Value.LeaseDeliveries("node-2", 10, Long));   // held by node-1
        Assert.Equal(new OutboxState(2, 0, 0), two.Value.Outbox());

        // node-1's attempt at completed failed: due again after the delay, leased by whoever asks then, attempt 2.
        Assert.True(one.Value.RecordDelivery("node-1", leased[1], DeliveryOutcome.Retry, TimeSpan.FromMilliseconds(300), "HTTP 500"));
        Assert.Empty(two.Value.LeaseDeliveries("node-2", 10, Long));   // not due yet
        Thread.Sleep(500);
        WebhookDelivery again = Assert.Single(two.Value.LeaseDeliveries("node-2", 10, Long));
        Assert.Equal((completed.Id, 2), (again.Id, again.Attempt));

        // Only the lease's holder, for this attempt, records; then the row is done and never leased again.
        Assert.False(one.Value.RecordDelivery("node-1", leased[1], DeliveryOutcome.Delivered, TimeSpan.Zero, null));
        Assert.True(two.Value.RecordDelivery("node-2", again, DeliveryOutcome.Delivered, TimeSpan.Zero, null));
        Assert.False(two.Value.RecordDelivery("node-2", again, DeliveryOutcome.Delivered, TimeSpan.Zero, null));
        Assert.True(one.Value.RecordDelivery("node-1", leased[0], DeliveryOutcome.Delivered, TimeSpan.Zero, null));
        Assert.Equal(new OutboxState(0, 0, 0), one.Value.Outbox());
        Thread.Sleep(50);
        Assert.Empty(one.Value.LeaseDeliveries("node-1", 10, TimeSpan.Zero));

        // A delivered event written again (a job run twice, two nodes writing it) is not sent again.
        one.Value.AddDeliveries([completed]);
        Assert.Equal(new OutboxState(0, 0, 0), one.Value.Outbox());
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_lease_that_ran_out_gives_the_delivery_to_another_node_and_a_final_failure_is_kept_with_its_reason(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var dead = database.Open();
        using var alive = database.Open();
        PredictionView p = Hooked("hook00000002");
        alive.Value.AddDeliveries(WebhookDispatcher.For(p, "{}", "completed"));
        WebhookDelivery lost = Assert.Single(dead.Value.LeaseDeliveries("node-dead", 10, TimeSpan.FromMilliseconds(200)));
        Thread.Sleep(400);
        WebhookDelivery taken = Assert.Single(alive.Value.LeaseDeliveries("node-alive", 10, Long));
        Assert.Equal((lost.Id, 2), (taken.Id, taken.Attempt));
        Assert.False(dead.Value.RecordDelivery("node-dead", lost, DeliveryOutcome.Delivered, TimeSpan.Zero, null));

        Assert.True(alive.Value.RecordDelivery("node-alive", taken, DeliveryOutcome.Failed, TimeSpan.Zero, "failed 2 times, the last: HTTP 500"));
        Assert.Equal(new OutboxState(0, 0, 1), alive.Value.Outbox());
        Assert.Empty(alive.Value.LeaseDeliveries("node-alive", 10, Long));

        // Pruning takes finished rows of the age given, never a pending one.
        PredictionView other = Hooked("hook00000007");
        alive.Value.AddDeliveries(WebhookDispatcher.For(other, "{}", "completed"));
        Assert.Equal(0, alive.Value.PruneDeliveries(TimeSpan.FromMinutes(1)));
        Thread.Sleep(300);
        Assert.Equal(1, alive.Value.PruneDeliveries(TimeSpan.FromMilliseconds(200)));
        Assert.Equal(new OutboxState(1, 1, 0), alive.Value.Outbox());
        Assert.Equal(0, alive.Value.PruneDeliveries(TimeSpan.Zero));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_jobs_webhooks_enter_the_outbox_with_its_recorded_outcome_and_not_from_a_worker_that_lost_the_lease(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var api = database.Open();
        using var stale = database.Open();
        using var live = database.Open();
        PredictionView p = Hooked("hook00000003");
        api.Value.Enqueue(p, "64x64", "{}");
        LeasedJob first = Assert.Single(stale.Value.Lease("worker-stale", 1, TimeSpan.FromMilliseconds(200)));
        Thread.Sleep(400);
        LeasedJob second = Assert.Single(live.Value.Lease("worker-live", 1, Long));

        PredictionView final = p with { Status = PredictionStatus.Succeeded, Output = ["out-0.webp"], CompletedAt = DateTimeOffset.UtcNow };
        Assert.False(stale.Value.Complete("worker-stale", first, final, WebhookDispatcher.For(final, "stale", "output", "completed")));
        Assert.Equal(new OutboxState(0, 0, 0), api.Value.Outbox());
        Assert.True(live.Value.Complete("worker-live", second, final, WebhookDispatcher.For(final, "live", "output", "completed")));
        IReadOnlyList<WebhookDelivery> deliveries = api.Value.LeaseDeliveries("node", 10, Long);
        Assert.Equal(["output", "completed"], deliveries.Select(d => d.Event));
        Assert.All(deliveries, d => Assert.Equal("live", d.Body));

        // A waiting job canceled from an API node: its completed webhook goes in with the final state.
        PredictionView waiting = Hooked("hook00000004");
        api.Value.Enqueue(waiting, "64x64", "{}");
        PredictionView canceled = waiting with { Status = PredictionStatus.Canceled, CompletedAt = DateTimeOffset.UtcNow };
        Assert.Equal(AbortOutcome.Finished, api.Value.Abort(waiting.Id, canceled, WebhookDispatcher.For(canceled, "canceled", "completed")));
        WebhookDelivery cancelHook = Assert.Single(api.Value.LeaseDeliveries("node", 10, Long));
        Assert.Equal((waiting.Id, "completed", "canceled"), (cancelHook.PredictionId, cancelHook.Event, cancelHook.Body));
    }

    [Fact]
    public void A_prediction_gets_the_events_it_asked_for_with_one_id_per_event_and_a_fresh_one_per_logs_event()
    {
        PredictionView p = Hooked("hook00000005") with { WebhookEvents = ["completed", "logs"] };
        Assert.Empty(WebhookDispatcher.For(p, "{}", "start", "output"));
        Assert.Empty(WebhookDispatcher.For(p with { Webhook = null }, "{}", "completed"));
        string url = p.Webhook!;
        Assert.Equal(WebhookDelivery.StableId(p.Id, "completed", url), Assert.Single(WebhookDispatcher.For(p, "{}", "completed")).Id);
        Assert.NotEqual(WebhookDelivery.StableId(p.Id, "completed", url), WebhookDelivery.StableId("hook00000006", "completed", url));
        Assert.NotEqual(WebhookDelivery.StableId(p.Id, "completed", url), WebhookDelivery.StableId(p.Id, "output", url));
        Assert.NotEqual(WebhookDelivery.StableId(p.Id, "completed", url), WebhookDelivery.StableId(p.Id, "completed", url + "/other"));
        Assert.NotEqual(Assert.Single(WebhookDispatcher.For(p, "{}", "logs")).Id, Assert.Single(WebhookDispatcher.For(p, "{}", "logs")).Id);
        Assert.Matches("^msg_[0-9a-f]{24}$", WebhookDelivery.StableId(p.Id, "start", url));
    }

    private static PredictionView Hooked(string id) =>
        PredictionStoreContractTests.Sample(id, DateTimeOffset.UtcNow) with { Webhook = "https://example.com/hook", WebhookEvents = WebhookDispatcher.Events };
}
