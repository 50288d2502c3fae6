import BatonPosix
import Foundation
import Testing

@Suite("EventLoop")
struct EventLoopTests {
  @Test("execute from 8 threads runs each of 80,000 closures once, in per-thread FIFO order", .timeLimit(.minutes(1)))
  func executeFromManyThreads() async {
    let threads = 8
    let perThread = 10_000
    await withLoop { loop in
      let sequences = await withCheckedContinuation { (continuation: CheckedContinuation<[[Int]], Never>) in
        let seen = LoopConfined([[Int]](repeating: [], count: threads))
        let remaining = LoopConfined(threads * perThread)
        for thread in 0..<threads {
          Thread.detachNewThread {
            for sequence in 0..<perThread {
              loop.execute {
                precondition(loop.inEventLoop)
                seen.value[thread].append(sequence)
                remaining.value -= 1
                if remaining.value == 0 {
                  continuation.resume(returning: seen.value)
                }
              }
            }
          }
        }
      }
      for sequence in sequences {
        #expect(sequence == Array(0..<perThread))
      }
    }
  }

  @Test(
    "execute from the loop thread runs next turn, in order, without signalling the eventfd", .timeLimit(.minutes(1)))
  func executeFromLoopThread() async {
    await withLoop { loop in
      let (order, wakeupsBefore, wakeupsAfter, ranInline) = await withCheckedContinuation {
        (continuation: CheckedContinuation<([Int], Int, Int, Bool), Never>) in
        loop.execute {
          let order = LoopConfined([Int]())
          let wakeupsBefore = loop.wakeupCount
          for value in 0..<100 {
            loop.execute {
              order.value.append(value)
              if value == 99 {
                continuation.resume(returning: (order.value, wakeupsBefore, loop.wakeupCount, false))
              }
            }
          }
          if !order.value.isEmpty {
            continuation.resume(returning: ([], 0, 0, true))
          }
        }
      }
      #expect(!ranInline)
      #expect(order == Array(0..<100))
      #expect(wakeupsAfter == wakeupsBefore)
    }
  }

  @Test("inEventLoop is true on the loop thread and false elsewhere", .timeLimit(.minutes(1)))
  func inEventLoop() async throws {
    try await withLoop { loop in
      #expect(!loop.inEventLoop)
      let inside = try await loop.submit { loop.inEventLoop }
      #expect(inside)
    }
  }

  @Test("submit returns the result or rethrows the error of work run on the loop", .timeLimit(.minutes(1)))
  func submit() async throws {
    struct Expected: Error, Equatable {}
    try await withLoop { loop in
      let answer = try await loop.submit { 6 * 7 }
      #expect(answer == 42)
      await #expect(throws: Expected()) {
        try await loop.submit { () throws -> Int in throw Expected() }
      }
    }
  }

  @Test(
    "runAtTurnEnd runs after all work of its batch, repeats for callbacks it adds, and precedes next turn's work",
    .timeLimit(.minutes(1)))
  func runAtTurnEnd() async {
    await withLoop { loop in
      let order = await withCheckedContinuation { (continuation: CheckedContinuation<[String], Never>) in
        let order = LoopConfined([String]())
        // Queued from the loop thread in one turn, so A, B and C are one batch next turn.
        loop.execute {
          loop.execute {
            order.value.append("A")
            loop.runAtTurnEnd {
              order.value.append("X")
              loop.execute {
                order.value.append("D")
                continuation.resume(returning: order.value)
              }
              loop.runAtTurnEnd { order.value.append("Y") }
            }
          }
          loop.execute { order.value.append("B") }
          loop.execute { order.value.append("C") }
        }
      }
      #expect(order == ["A", "B", "C", "X", "Y", "D"])
    }
  }

  @Test(
    "in a long batch, turn-end callbacks also run after every workBetweenTurnEnds items",
    .timeLimit(.minutes(1)))
  func turnEndWithinLongBatch() async {
    let every = EventLoop.workBetweenTurnEnds
    await withLoop { loop in
      let order = await withCheckedContinuation { (continuation: CheckedContinuation<[String], Never>) in
        let order = LoopConfined([String]())
        // Queued from the loop thread in one turn, so all items are one batch next turn.
        loop.execute {
          for item in 1...(2 * every + 4) {
            loop.execute {
              order.value.append("\(item)")
              if item == 1 || item == every + 1 {
                loop.runAtTurnEnd { order.value.append("end after \(order.value.count) items") }
              }
              if item == 2 * every + 4 {
                loop.runAtTurnEnd { continuation.resume(returning: order.value) }
              }
            }
          }
        }
      }
      let ends = order.filter { $0.hasPrefix("end") }
      #expect(ends == ["end after \(every) items", "end after \(2 * every + 1) items"])
      #expect(order.count == 2 * every + 4 + 2)
    }
  }

  @Test(
    "work noted outside the queue (a handler started in place) counts with queued work toward running turn-end callbacks",
    .timeLimit(.minutes(1)))
  func notedWork() async {
    let every = EventLoop.workBetweenTurnEnds
    await withLoop { loop in
      let alone = await withCheckedContinuation { (continuation: CheckedContinuation<[String], Never>) in
        loop.execute {
          let log = LoopConfined([String]())
          loop.runAtTurnEnd { log.value.append("end") }
          for _ in 1..<every { loop.noteWorkDone() }
          log.value.append("noted \(every - 1)")
          loop.noteWorkDone()
          log.value.append("noted \(every)")
          continuation.resume(returning: log.value)
        }
      }
      #expect(alone == ["noted \(every - 1)", "end", "noted \(every)"])

      let mixed = await withCheckedContinuation { (continuation: CheckedContinuation<[String], Never>) in
        // One batch next turn: every - 1 queued items, then one that notes one more.
        loop.execute {
          for _ in 1..<every { loop.execute {} }
          loop.execute {
            let log = LoopConfined([String]())
            loop.runAtTurnEnd { log.value.append("end") }
            log.value.append("before")
            loop.noteWorkDone()
            log.value.append("after")
            continuation.resume(returning: log.value)
          }
        }
      }
      #expect(mixed == ["before", "end", "after"])
    }
  }

  @Test("a task preferring the loop runs on it, also after suspending", .timeLimit(.minutes(1)))
  func taskPreference() async {
    await withLoop { loop in
      let observations = await Task(executorPreference: loop) { () async -> [Bool] in
        var seen = [loop.inEventLoop]
        await Task.yield()
        seen.append(loop.inEventLoop)
        try? await Task.sleep(for: .milliseconds(1))
        seen.append(loop.inEventLoop)
        return seen
      }.value
      #expect(observations == [true, true, true])
    }
  }

  @Test("10,000 tasks preferring the loop all complete on it", .timeLimit(.minutes(1)))
  func manyTasks() async {
    await withLoop { loop in
      let onLoop = await withTaskGroup(of: Bool.self) { group in
        for _ in 0..<10_000 {
          group.addTask(executorPreference: loop) {
            await Task.yield()
            return loop.inEventLoop
          }
        }
        var count = 0
        for await ran in group where ran {
          count += 1
        }
        return count
      }
      #expect(onLoop == 10_000)
    }
  }
}
