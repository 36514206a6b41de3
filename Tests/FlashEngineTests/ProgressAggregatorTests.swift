import Foundation
import Synchronization
import Testing
@testable import FlashEngine

/// Collects emitted events.
private final class EventLog: Sendable {
    private let storage = Mutex<[FlashEvent]>([])

    func append(_ event: FlashEvent) { storage.withLock { $0.append(event) } }
    var events: [FlashEvent] { storage.withLock { $0 } }

    var progress: [(snapshot: ProgressSnapshot, timestamp: Int64)] {
        events.compactMap {
            if case .progress(_, let snapshot, let timestamp) = $0 { return (snapshot, timestamp) }
            return nil
        }
    }

    var types: [String] { events.map(\.protocolType) }
}

private let MB: Int64 = 1_000_000
private let testJob = JobInfo(jobId: "job_test", deviceId: "SERIAL1")

private func makeAggregator(totalBytes: Int64, rate: ProgressRate = .standard, pacedByTicks: Bool = false) -> (ProgressAggregator, ManualClock, EventLog) {
    let clock = ManualClock()
    let log = EventLog()
    let aggregator = ProgressAggregator(
        job: testJob, totalBytes: totalBytes, clock: clock, rate: rate, speedWindow: 2.0,
        pacedByTicks: pacedByTicks, emit: { log.append($0) })
    return (aggregator, clock, log)
}

/// Feeds `bytesPerStep` every `stepMs` for `steps` steps, starting from `startBytes`; returns the bytes sent.
@discardableResult
private func feed(_ aggregator: ProgressAggregator, _ clock: ManualClock, from startBytes: Int64,
                  bytesPerStep: Int64, stepMs: UInt64, steps: Int) -> Int64 {
    var bytes = startBytes
    for _ in 0..<steps {
        clock.advance(ms: stepMs)
        bytes += bytesPerStep
        aggregator.update(bytesTransferred: bytes)
    }
    return bytes
}

@Suite struct ProgressAggregatorTests {
    @Test func steadyRateGivesExactSpeed() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 100 * MB)
        aggregator.start(stage: "Writing system")
        feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 50)
        let progress = log.progress
        #expect(progress.count >= 10)
        // The first message has one point of the curve: no pace yet.
        #expect(progress.first?.snapshot.transferSpeed == 0)
        for entry in progress.dropFirst() {
            #expect(entry.snapshot.transferSpeed == 10_000_000)
        }
        #expect(aggregator.latestSnapshot?.transferSpeed == 10_000_000)
    }

    @Test func windowForgetsOldSpeed() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 1_000 * MB)
        aggregator.start(stage: "Writing")
        var bytes = feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 30)   // 10 MB/s for 3 s
        let phaseTwo = log.progress.count
        bytes = feed(aggregator, clock, from: bytes, bytesPerStep: MB / 2, stepMs: 100, steps: 30) // 5 MB/s for 3 s

        let later = log.progress.dropFirst(phaseTwo)
        // During the first 2 s of the slower phase the window mixes both rates.
        for entry in later where entry.timestamp - clock.epochBase < 5_000 {
            #expect(entry.snapshot.transferSpeed < 10_000_000)
            #expect(entry.snapshot.transferSpeed >= 5_000_000)
        }
        // Once the window holds only the slower phase, the old speed is forgotten entirely.
        let settled = later.filter { $0.timestamp - clock.epochBase >= 5_000 }
        #expect(!settled.isEmpty)
        for entry in settled {
            #expect(entry.snapshot.transferSpeed == 5_000_000)
        }
        #expect(bytes == 45 * MB)
    }

    @Test func stallDecaysSpeedToZeroAndEtaBecomesUnknown() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 100 * MB)
        aggregator.start(stage: "Writing")
        feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 30)
        clock.advance(ms: 1_000)
        aggregator.tick()
        // A second without news is not a stall yet: the pace holds and the ETA counts down.
        #expect(log.progress.last?.snapshot.transferSpeed == 10_000_000)
        #expect(log.progress.last?.snapshot.estimatedTimeRemaining == 6)   // 70 MB at 10 MB/s, 1 s ago
        clock.advance(ms: 500)
        aggregator.tick()
        // Stalled: the window ends now, 1.5 s of its 2 s without bytes; the ETA is unknown.
        #expect(log.progress.last?.snapshot.transferSpeed == 2_500_000)
        #expect(log.progress.last?.snapshot.estimatedTimeRemaining == nil)
        #expect(log.progress.last?.snapshot.stage == "Writing" + ProgressAggregator.estimatingSuffix)
        clock.advance(ms: 1_000)
        aggregator.tick()
        #expect(log.progress.last?.snapshot.transferSpeed == 0)
        #expect(log.progress.last?.snapshot.estimatedTimeRemaining == nil)
        // Nothing changes any more: further ticks send nothing.
        let count = log.progress.count
        clock.advance(ms: 1_000)
        aggregator.tick()
        #expect(log.progress.count == count)
    }

    @Test func etaFromSteadyRateIsRemainingOverRate() {
        let total = 100 * MB
        let (aggregator, clock, log) = makeAggregator(totalBytes: total)
        aggregator.start(stage: "Writing")
        feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 60)
        #expect(log.progress.count >= 10)
        // Known once the pace has been seen for 0.3 s over 3 points; until then 0 on the wire,
        // and the stage says so.
        let unknown = log.progress.prefix { $0.snapshot.estimatedTimeRemaining == nil }
        #expect(unknown.count == 1)
        #expect(unknown.allSatisfy { $0.snapshot.stage == "Writing" + ProgressAggregator.estimatingSuffix })
        for entry in log.progress.dropFirst(unknown.count) {
            let remaining = Double(total - entry.snapshot.bytesTransferred)
            #expect(entry.snapshot.estimatedTimeRemaining == Int64((remaining / 10_000_000).rounded()))
            #expect(entry.snapshot.stage == "Writing")
        }
        // At 41 MB of 100 MB at 10 MB/s: 5.9 s, shown as 6.
        #expect(log.progress.contains { $0.snapshot.bytesTransferred == 41 * MB && $0.snapshot.estimatedTimeRemaining == 6 })
    }

    @Test func bytesThatOnlyFilledBuffersAtTheStartDoNotMakeThePace() {
        let total = 100 * MB
        let (aggregator, clock, log) = makeAggregator(totalBytes: total)
        aggregator.start(stage: "Connecting")
        clock.advance(ms: 2_000)                     // connecting: not part of the pace
        aggregator.setStage("Sending system")
        clock.advance(ms: 5)
        aggregator.update(bytesTransferred: 4 * MB)  // what the device's buffers took at once
        feed(aggregator, clock, from: 4 * MB, bytesPerStep: 200_000, stepMs: 100, steps: 40)  // then 2 MB/s
        let known = log.progress.filter { $0.snapshot.estimatedTimeRemaining != nil }
        #expect(!known.isEmpty)
        for entry in known {
            #expect(entry.snapshot.transferSpeed == 2_000_000)
            let remaining = Double(total - entry.snapshot.bytesTransferred)
            #expect(entry.snapshot.estimatedTimeRemaining == Int64((remaining / 2_000_000).rounded()))
        }
    }

    @Test func aPauseIsNotPartOfThePace() {
        let total = 100 * MB
        let (aggregator, clock, log) = makeAggregator(totalBytes: total, rate: .unlimited)
        aggregator.start(stage: "Writing")
        var bytes = feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 30)
        clock.advance(ms: 60)                          // bytes flow on, the next count is not in yet
        aggregator.paused()
        clock.advance(ms: 2_000)
        aggregator.update(bytesTransferred: 31 * MB)   // the device empties its buffers
        clock.advance(ms: 3_000)
        aggregator.resumed()
        // At once after the resume, and as the transfer goes on: the pace from before, unchanged.
        let resumed = log.progress.last!.snapshot
        #expect(resumed.transferSpeed == 10_000_000)
        #expect(resumed.estimatedTimeRemaining == 7)   // 69 MB at 10 MB/s
        aggregator.update(bytesTransferred: 32 * MB)   // its buffers fill again at once
        bytes = feed(aggregator, clock, from: 32 * MB, bytesPerStep: MB, stepMs: 100, steps: 10)
        for entry in log.progress.suffix(10) {
            #expect(entry.snapshot.transferSpeed == 10_000_000)
            let remaining = Double(total - entry.snapshot.bytesTransferred)
            #expect(entry.snapshot.estimatedTimeRemaining == Int64((remaining / 10_000_000).rounded()))
        }
        #expect(bytes == 42 * MB)
    }

    @Test func rateLimitAtMostFourInAnySecondTheFinalIncluded() {
        for endMs in stride(from: UInt64(2_000), through: 2_400, by: 10) {
            let (aggregator, clock, log) = makeAggregator(totalBytes: 1_000 * MB)
            aggregator.start(stage: "Writing")
            feed(aggregator, clock, from: 0, bytesPerStep: 100_000, stepMs: 10, steps: Int(endMs / 10))
            aggregator.completed()
            let times = log.progress.map { $0.timestamp - clock.epochBase }
            #expect(times.last == Int64(endMs))
            // In any window of 1,000 ms, both ends included: at most 4, whenever the job ends.
            for (index, time) in times.enumerated() {
                #expect(times[index...].prefix { $0 <= time + 1_000 }.count <= 4, "ending at \(endMs) ms: \(times)")
            }
            // Regular ones come evenly, a little over a third of a second apart, while bytes flow.
            let regular = times.dropLast()
            #expect(regular.first == 10)
            for (earlier, later) in zip(regular, regular.dropFirst()) {
                #expect(later - earlier >= 340)
                #expect(later - earlier <= 350)
            }
        }
    }

    @Test func percentageNeverDecreasesAndStaysBelow100UntilCompleted() {
        let total = 10 * MB
        let (aggregator, clock, log) = makeAggregator(totalBytes: total, rate: .unlimited)
        aggregator.start(stage: "Writing")
        var bytes: Int64 = 0
        for step in 0..<200 {
            clock.advance(ms: 30)
            bytes += 77_777
            // A decrease (a confused job) is ignored.
            aggregator.update(bytesTransferred: step % 7 == 3 ? bytes / 2 : bytes)
        }
        #expect(bytes > total)   // the estimate was too low
        let values = log.progress.map(\.snapshot.progress)
        #expect(values.count > 50)
        for (earlier, later) in zip(values, values.dropFirst()) {
            #expect(later >= earlier)
        }
        for value in values {
            #expect(value < 100)
            #expect(value <= 99.9)
            #expect(abs(value * 10 - (value * 10).rounded()) < 1e-9)
        }
        #expect(values.last == 99.9)
        let byteCounts = log.progress.map(\.snapshot.bytesTransferred)
        for (earlier, later) in zip(byteCounts, byteCounts.dropFirst()) {
            #expect(later >= earlier)
        }
        for entry in log.progress {
            #expect(entry.snapshot.bytesTransferred <= entry.snapshot.totalBytes)
        }
        aggregator.completed()
        #expect(log.progress.last?.snapshot.progress == 100)
    }

    @Test func percentageRoundsToOneDecimal() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 4_294_967_296)
        aggregator.start(stage: "Writing system")
        clock.advance(ms: 100)
        aggregator.update(bytesTransferred: 1_953_857_536)
        #expect(log.progress.last?.snapshot.progress == 45.5)
        clock.advance(ms: 400)
        aggregator.update(bytesTransferred: 4_294_967_000)   // 99.99999...%
        #expect(log.progress.last?.snapshot.progress == 99.9)
    }

    @Test func completedEmitsFinal100ThenSummary() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 100 * MB)
        aggregator.start(stage: "Writing")
        let bytes = feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 100)
        aggregator.completed()

        let events = log.events
        #expect(events.count >= 3)
        guard case .progress(_, let final, _) = events[events.count - 2] else {
            Issue.record("expected progress before completed, got \(events[events.count - 2])")
            return
        }
        #expect(final.progress == 100)
        #expect(final.bytesTransferred == bytes)
        #expect(final.totalBytes == bytes)
        #expect(final.estimatedTimeRemaining == 0)
        guard case .completed(_, let summary, let timestamp) = events[events.count - 1] else {
            Issue.record("expected completed last")
            return
        }
        #expect(summary == JobSummary(bytes: 100 * MB, durationMs: 10_000, averageSpeed: 10_000_000))
        #expect(timestamp == clock.epochBase + 10_000)
        #expect(aggregator.latestSnapshot == final)

        // Nothing after the end.
        let count = log.events.count
        clock.advance(ms: 1_000)
        aggregator.update(bytesTransferred: 200 * MB)
        aggregator.setStage("late")
        aggregator.tick()
        aggregator.completed()
        aggregator.failed(error: "late")
        #expect(log.events.count == count)
    }

    @Test func twoPassesShowOnePassOfBytesEachAndHalfTheJobEach() {
        let clock = ManualClock()
        let log = EventLog()
        let aggregator = ProgressAggregator(job: testJob, totalBytes: 100 * MB, passes: 2, clock: clock, rate: .unlimited, emit: { log.append($0) })
        aggregator.start(stage: "Writing")
        feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 100)
        let written = log.progress.last!.snapshot
        #expect(written.stage == "Writing")
        #expect(written.bytesTransferred == 100 * MB)
        #expect(written.totalBytes == 100 * MB)
        #expect(written.progress == 50)
        // The verify pass still to come counts in the ETA: at 10 MB/s, 10 s more.
        #expect(written.estimatedTimeRemaining == 10)

        aggregator.beginPass(stage: "Verifying")
        feed(aggregator, clock, from: 0, bytesPerStep: MB, stepMs: 100, steps: 50)
        let halfway = log.progress.last!.snapshot
        #expect(halfway.stage == "Verifying")
        #expect(halfway.bytesTransferred == 50 * MB)
        #expect(halfway.totalBytes == 100 * MB)
        #expect(halfway.progress == 75)
        #expect(halfway.transferSpeed == 10 * MB)
        #expect(halfway.estimatedTimeRemaining == 5)
        feed(aggregator, clock, from: 50 * MB, bytesPerStep: MB, stepMs: 100, steps: 50)
        aggregator.completed(sha256: "ab", verified: true)
        let percents = log.progress.map(\.snapshot.progress)
        #expect(percents == percents.sorted())
        #expect(log.progress.allSatisfy { $0.snapshot.totalBytes == 100 * MB })
        guard case .completed(_, let summary, _) = log.events.last else {
            Issue.record("expected completed last")
            return
        }
        #expect(summary == JobSummary(bytes: 100 * MB, durationMs: 20_000, averageSpeed: 5_000_000, sha256: "ab", verified: true))
    }

    @Test func completedBypassesRateLimitAndFixesShortTotal() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 100 * MB)
        aggregator.start(stage: "Writing")
        clock.advance(ms: 8_000)
        aggregator.update(bytesTransferred: 80 * MB)   // emitted
        clock.advance(ms: 1)
        aggregator.completed()                        // 1 ms later: still sends its 100%
        let types = log.types
        #expect(types == ["flash_started", "flash_progress", "flash_progress", "flash_completed"])
        let final = log.progress.last!.snapshot
        #expect(final.progress == 100)
        #expect(final.bytesTransferred == 80 * MB)
        #expect(final.totalBytes == 80 * MB)
        guard case .completed(_, let summary, _) = log.events.last! else {
            Issue.record("expected completed")
            return
        }
        #expect(summary == JobSummary(bytes: 80 * MB, durationMs: 8_001, averageSpeed: 9_998_750))
    }

    @Test func pendingStageChangeIsSentByNextTick() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 100 * MB)
        aggregator.start(stage: "Initializing")
        clock.advance(ms: 10)
        aggregator.setStage("Sending boot 1/3")        // first progress: allowed at once
        #expect(log.progress.last?.snapshot.stage == "Sending boot 1/3")
        clock.advance(ms: 50)
        aggregator.setStage("Sending boot 2/3")        // too soon
        #expect(log.progress.count == 1)
        clock.advance(ms: 100)
        aggregator.tick()                              // still too soon
        #expect(log.progress.count == 1)
        clock.advance(ms: 200)
        aggregator.tick()                              // 350 ms after the last progress
        #expect(log.progress.count == 2)
        #expect(log.progress.last?.snapshot.stage == "Sending boot 2/3")
        clock.advance(ms: 500)
        aggregator.tick()                              // nothing new
        #expect(log.progress.count == 2)
    }

    @Test func pacedByTicksProgressComesOnlyFromTicks() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 100 * MB, pacedByTicks: true)
        aggregator.start(stage: "Sending boot")
        clock.advance(ms: 300)
        aggregator.update(bytesTransferred: 10 * MB)
        aggregator.setStage("Writing boot")
        #expect(log.progress.isEmpty, "updates and stage changes wait for the tick")
        aggregator.tick()
        #expect(log.progress.count == 1)
        #expect(log.progress.last?.snapshot.bytesTransferred == 10 * MB)
        #expect(log.progress.last?.snapshot.stage == "Writing boot" + ProgressAggregator.estimatingSuffix)
        clock.advance(ms: 310)                         // a tick that comes a little early still counts
        aggregator.update(bytesTransferred: 20 * MB)
        aggregator.tick()
        #expect(log.progress.count == 2)
        clock.advance(ms: 100)                         // a second tick within the interval does not
        aggregator.update(bytesTransferred: 30 * MB)
        aggregator.tick()
        #expect(log.progress.count == 2)
        aggregator.completed()
        #expect(log.progress.last?.snapshot.progress == 100)
        #expect(log.types.last == "flash_completed")
    }

    @Test func lifecycleOrderIsPreserved() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 10 * MB)
        aggregator.start(stage: "Initializing")
        clock.advance(ms: 100)
        aggregator.update(bytesTransferred: MB)
        clock.advance(ms: 10)
        aggregator.paused()
        aggregator.paused()                            // already paused: no second event
        clock.advance(ms: 500)
        aggregator.update(bytesTransferred: 2 * MB)    // in-flight ack: counted, not sent while paused
        aggregator.tick()
        aggregator.setStage("Writing")
        aggregator.deviceMessage("erasing...")
        clock.advance(ms: 500)
        aggregator.resumed()
        aggregator.resumed()
        clock.advance(ms: 10)
        aggregator.update(bytesTransferred: 3 * MB)
        aggregator.stopped(by: .user)
        aggregator.paused()

        #expect(log.types == [
            "flash_started", "flash_progress", "flash_paused", "device_message",
            "flash_resumed", "flash_progress", "flash_failed",
        ])
        let resumedProgress = log.progress.last!.snapshot
        #expect(resumedProgress.stage == "Writing" + ProgressAggregator.estimatingSuffix)
        #expect(resumedProgress.bytesTransferred == 2 * MB)
        guard case .failed(_, let error, let reason, _) = log.events.last! else {
            Issue.record("expected failed")
            return
        }
        #expect(error == "Flash cancelled by user")
        #expect(reason == "cancelled")
    }

    @Test func zeroTotalBytes() {
        let (aggregator, clock, log) = makeAggregator(totalBytes: 0)
        aggregator.start(stage: "Erasing userdata")
        clock.advance(ms: 300)
        aggregator.setStage("Still erasing")
        clock.advance(ms: 300)
        aggregator.update(bytesTransferred: 5 * MB)
        for entry in log.progress {
            #expect(entry.snapshot.progress == 0)
            #expect(entry.snapshot.estimatedTimeRemaining == nil)
            #expect(entry.snapshot.progress.isFinite)
        }
        clock.advance(ms: 300)
        aggregator.completed()
        let final = log.progress.last!.snapshot
        #expect(final.progress == 100)
        #expect(final.totalBytes == 5 * MB)

        let (empty, emptyClock, emptyLog) = makeAggregator(totalBytes: 0)
        empty.start(stage: "Rebooting")
        emptyClock.advance(ms: 100)
        empty.completed()
        #expect(emptyLog.types == ["flash_started", "flash_progress", "flash_completed"])
        #expect(emptyLog.progress.last?.snapshot.progress == 100)
        guard case .completed(_, let summary, _) = emptyLog.events.last! else {
            Issue.record("expected completed")
            return
        }
        #expect(summary == JobSummary(bytes: 0, durationMs: 100, averageSpeed: 0))
    }

    @Test func endingWithoutStartStillSendsStarted() {
        let (aggregator, _, log) = makeAggregator(totalBytes: 10 * MB)
        aggregator.update(bytesTransferred: MB)        // before start: counted, not sent
        aggregator.failed(error: "USB connection lost during transfer")
        #expect(log.types == ["flash_started", "flash_failed"])
    }

    @Test func replayEventsForLateClients() {
        let (aggregator, clock, _) = makeAggregator(totalBytes: 10 * MB)
        #expect(aggregator.replayEvents().isEmpty)
        #expect(aggregator.latestSnapshot == nil)
        aggregator.start(stage: "Initializing")
        #expect(aggregator.replayEvents().map(\.protocolType) == ["flash_started"])
        clock.advance(ms: 100)
        aggregator.update(bytesTransferred: MB)
        aggregator.paused()
        #expect(aggregator.replayEvents().map(\.protocolType) == ["flash_started", "flash_progress", "flash_paused"])
        #expect(aggregator.latestSnapshot?.bytesTransferred == MB)
        aggregator.resumed()
        #expect(aggregator.replayEvents().map(\.protocolType) == ["flash_started", "flash_progress"])
        aggregator.completed()
        #expect(aggregator.replayEvents().isEmpty)
        #expect(aggregator.latestSnapshot?.progress == 100)
    }

    @Test func concurrentFeedingKeepsOrderAndMonotonicity() {
        let log = EventLog()
        let aggregator = ProgressAggregator(
            job: testJob, totalBytes: 1_000_000, rate: ProgressRate(perSecond: 1000), emit: { log.append($0) })
        aggregator.start(stage: "Writing")
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for i in 0..<2_000 {
                aggregator.update(bytesTransferred: Int64(i * 4 + worker) * 100)
                if i % 100 == 0 { _ = aggregator.latestSnapshot; aggregator.tick() }
            }
        }
        aggregator.completed()
        let types = log.types
        #expect(types.first == "flash_started")
        #expect(types.last == "flash_completed")
        let values = log.progress.map(\.snapshot.progress)
        for (earlier, later) in zip(values, values.dropFirst()) {
            #expect(later >= earlier)
        }
    }
}
