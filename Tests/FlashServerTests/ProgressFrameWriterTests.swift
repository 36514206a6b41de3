import FlashEngine
@testable import FlashServer
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

/// `ProgressFrameWriter` on a test channel whose clock the test moves: what reaches the wire,
/// in how many flushes, and what happens when a write never finishes.
@Suite struct ProgressFrameWriterTests {
    let job = JobInfo(jobId: "job_00000001", deviceId: "SER1")

    func progress(_ bytes: Int64) -> FlashEvent {
        .progress(job, ProgressSnapshot(progress: Double(bytes), stage: "Sending boot", bytesTransferred: bytes, totalBytes: 100, transferSpeed: 1, estimatedTimeRemaining: 1), timestamp: bytes)
    }

    func connectedChannel() async throws -> NIOAsyncTestingChannel {
        let channel = NIOAsyncTestingChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 3001)).get()
        return channel
    }

    /// 117 and 202 bytes of JSON, then 78: frame lengths of 7 and 16 bits.
    var startProgressPause: [FlashEvent] {
        [.started(job, stage: "Connecting", totalBytes: 100, timestamp: 1), progress(10), .paused(job, timestamp: 2)]
    }

    /// A started writer for a new subscription of `broadcaster`; the task ends when the writer does.
    func startWriter(on channel: NIOAsyncTestingChannel, for broadcaster: EventBroadcaster) -> (EventSubscription, Task<Void, any Error>) {
        let subscription = broadcaster.subscribe()
        let writer = ProgressFrameWriter(channel: channel, subscription: subscription, fanout: EventLoopFanout(loop: channel.eventLoop))
        writer.start()
        return (subscription, Task { try await writer.finished() })
    }

    func writtenTexts(_ channel: NIOAsyncTestingChannel) async throws -> [String] {
        var texts: [String] = []
        while let frame = try await channel.readOutbound(as: WebSocketFrame.self) {
            #expect(frame.opcode == .text)
            #expect(frame.fin)
            texts.append(String(buffer: frame.data))
        }
        return texts
    }

    @Test func eventsPublishedCloseTogetherGoOutAsTextFramesInOneFlush() async throws {
        let channel = try await connectedChannel()
        let flushes = FlushCounter()
        try await channel.pipeline.addHandler(flushes)
        let broadcaster = EventBroadcaster()
        let (subscription, running) = startWriter(on: channel, for: broadcaster)

        let events = startProgressPause
        events.forEach(broadcaster.publish)
        await channel.testingEventLoop.advanceTime(by: EventLoopFanout.gatherDelay)
        #expect(try await writtenTexts(channel) == events.compactMap { $0.protocolJSON() })
        #expect(await flushes.count(on: channel.eventLoop) == 1)

        broadcaster.publish(.resumed(job, timestamp: 3))
        await channel.testingEventLoop.advanceTime(by: .milliseconds(0))
        #expect(try await writtenTexts(channel).isEmpty, "a lone event waits out the gathering delay")
        await channel.testingEventLoop.advanceTime(by: EventLoopFanout.gatherDelay)
        #expect(try await writtenTexts(channel) == [FlashEvent.resumed(job, timestamp: 3).protocolJSON()])

        // Closing the subscription (a server that stops) ends the writer once all is written.
        broadcaster.publish(progress(50))
        subscription.close()
        await channel.testingEventLoop.advanceTime(by: EventLoopFanout.gatherDelay)
        try await running.value
        #expect(try await writtenTexts(channel) == [progress(50).protocolJSON()])
    }

    @Test func aBatchReachesTheSocketAsOneBufferOfTheFramesNIOWouldHaveEncoded() async throws {
        let channel = try await connectedChannel()
        try await channel.eventLoop.submit { try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder()) }.get()
        let broadcaster = EventBroadcaster()
        let (subscription, running) = startWriter(on: channel, for: broadcaster)

        let events = startProgressPause
        events.forEach(broadcaster.publish)
        subscription.close()
        await channel.testingEventLoop.advanceTime(by: EventLoopFanout.gatherDelay)
        try await running.value

        var buffers: [[UInt8]] = []
        while var buffer = try await channel.readOutbound(as: ByteBuffer.self) {
            buffers.append(buffer.readBytes(length: buffer.readableBytes) ?? [])
        }
        let texts = events.compactMap { $0.protocolJSON() }
        #expect(buffers == [try texts.flatMap(encodedByNIO)], "one buffer: the three frames, as NIO's encoder makes them")
    }

    @Test(arguments: [0, 1, 125, 126, 65_535, 65_536, 70_000])
    func framesOfEveryLengthAreWhatNIOsEncoderMakes(length: Int) throws {
        let text = String(repeating: "é", count: length / 2) + String(repeating: "x", count: length % 2)
        var buffer = ByteBuffer()
        buffer.writeTextFrame(text)
        #expect(buffer.readBytes(length: buffer.readableBytes) == (try encodedByNIO(text)))
    }

    /// `text` as NIO's `WebSocketFrameEncoder` writes it as a server's text frame.
    func encodedByNIO(_ text: String) throws -> [UInt8] {
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        try channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: text))).wait()
        var bytes: [UInt8] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        _ = try channel.finish()
        return bytes
    }

    @Test func aClientWhoseWriteNeverFinishesIsCutOffWhenItsQueueOverflows() async throws {
        let channel = try await connectedChannel()
        // Holds every write forever, as a socket whose reader has stopped reading.
        let stuck = StuckWrites()
        try await channel.pipeline.addHandler(stuck)
        let broadcaster = EventBroadcaster(subscriberLimit: 4)
        let (subscription, running) = startWriter(on: channel, for: broadcaster)

        broadcaster.publish(.paused(job, timestamp: 1))
        await channel.testingEventLoop.advanceTime(by: EventLoopFanout.gatherDelay)
        #expect(await stuck.heldCount(on: channel.eventLoop) == 1, "the first write is on its way, and stays there")
        for index in 0..<5 {
            broadcaster.publish(.resumed(job, timestamp: Int64(index)))
        }
        #expect(subscription.didOverflow)
        await channel.testingEventLoop.advanceTime(by: EventLoopFanout.gatherDelay)
        #expect(await outcome(of: running) == "too slow")
        await stuck.failHeldWrites(on: channel.eventLoop)
    }

    /// How `task` ended, or "still running" after `seconds`.
    func outcome(of task: Task<Void, any Error>, within seconds: Int = 5) async -> String {
        await withTaskGroup(of: String.self) { group in
            group.addTask {
                do {
                    try await task.value
                    return "ended without an error"
                } catch is ProgressFrameWriter.TooSlow {
                    return "too slow"
                } catch {
                    return "\(error)"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return "still running"
            }
            let first = await group.next() ?? "?"
            task.cancel()
            group.cancelAll()
            return first
        }
    }
}

/// Counts flushes on their way to the wire.
private final class FlushCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    private var flushes = 0

    func flush(context: ChannelHandlerContext) {
        flushes += 1
        context.flush()
    }

    func count(on loop: any EventLoop) async -> Int {
        try! await loop.submit { self.flushes }.get()
    }
}

/// Never passes a write on and never completes its promise.
private final class StuckWrites: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    private var held: [EventLoopPromise<Void>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let promise { held.append(promise) }
    }

    func heldCount(on loop: any EventLoop) async -> Int { try! await loop.submit { self.held.count }.get() }

    /// NIO requires every promise to be completed before it goes away.
    func failHeldWrites(on loop: any EventLoop) async {
        try? await loop.submit {
            self.held.forEach { $0.fail(ChannelError.ioOnClosedChannel) }
            self.held.removeAll()
        }.get()
    }
}
