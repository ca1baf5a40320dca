/**
 * The merchant's figures, computed from the API's objects: pure functions, unit-tested
 * (frontend/tests/unit/merchant-figures.test.ts).
 */
import type { Timestamp } from '@bufbuild/protobuf/wkt';

import { toDate } from '@shared/time';

/** What a day's payments add up to in one currency. */
export interface Volume {
  currency: string;
  /** Captured, in minor units: what succeeded payments received. */
  received: bigint;
  /** Payments that succeeded. */
  succeeded: number;
  /** Payments of any status. */
  count: number;
}

/** Per currency (sorted by code): the captured amount, successes and count of `payments`. */
export function volumeByCurrency(
  payments: readonly { currency: string; status: string; amountReceived: bigint }[],
): Volume[] {
  const byCurrency = new Map<string, Volume>();
  for (const payment of payments) {
    let volume = byCurrency.get(payment.currency);
    if (!volume) {
      volume = { currency: payment.currency, received: 0n, succeeded: 0, count: 0 };
      byCurrency.set(payment.currency, volume);
    }
    volume.count += 1;
    volume.received += payment.amountReceived;
    if (payment.status === 'succeeded') volume.succeeded += 1;
  }
  return [...byCurrency.values()].sort((a, b) => a.currency.localeCompare(b.currency));
}

/** Local midnight of the day `now` is in: where "today" starts for the person looking. */
export function startOfDay(now: Date): Date {
  return new Date(now.getFullYear(), now.getMonth(), now.getDate());
}

/** One line of a payment's timeline. */
export interface TimelineItem {
  time: Date;
  /** `created`, `event`, `delivery`, `refund` or `ledger`. */
  kind: string;
  title: string;
  detail: string;
  /** The object's id, for the test hooks and links. */
  id: string;
}

/** Items sorted oldest first; those at the same instant keep the order given. */
export function sortTimeline(items: TimelineItem[]): TimelineItem[] {
  return items
    .map((item, index) => ({ item, index }))
    .sort((a, b) => a.item.time.getTime() - b.item.time.getTime() || a.index - b.index)
    .map(({ item }) => item);
}

/** A timestamp as a Date; the epoch when unset, so that sorting never meets null. */
export function dateOf(timestamp: Timestamp | undefined): Date {
  return toDate(timestamp) ?? new Date(0);
}

/**
 * Whether an event is about a payment: its object is the payment itself, or a refund (or any
 * object) that names it as `payment_id`.
 */
export function eventConcerns(data: unknown, paymentId: string): boolean {
  const object = (data as { object?: { id?: unknown; payment_id?: unknown } } | null)?.object;
  return !!object && (object.id === paymentId || object.payment_id === paymentId);
}

/**
 * The half-open range of creation times for a "from" and "to" day typed as `YYYY-MM-DD` (either
 * may be empty), in local time: from the start of the first day to the end of the last.
 */
export function dayRange(from: string, to: string): { createdGte?: Date; createdLt?: Date } {
  const day = (text: string): Date | undefined => {
    const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
    return match ? new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : undefined;
  };
  const start = day(from);
  const last = day(to);
  const end = last ? new Date(last.getFullYear(), last.getMonth(), last.getDate() + 1) : undefined;
  return { createdGte: start, createdLt: end };
}

/** Whether a payment matches what was typed in the search box (id, description, card, amount). */
export function paymentMatches(
  payment: { id: string; description: string; card?: { last4: string; brand: string }; amount: bigint },
  text: string,
): boolean {
  const needle = text.trim().toLowerCase();
  if (!needle) return true;
  return [payment.id, payment.description, payment.card?.last4 ?? '', payment.card?.brand ?? '', payment.amount.toString()]
    .some((field) => field.toLowerCase().includes(needle));
}

/** The choices for how long a rolled key keeps working, in seconds (the API allows 0 to 7 days). */
export const ROLL_WINDOWS: readonly { seconds: number; label: string }[] = [
  { seconds: 0, label: 'Stops now' },
  { seconds: 3600, label: '1 hour' },
  { seconds: 24 * 3600, label: '24 hours' },
  { seconds: 3 * 24 * 3600, label: '3 days' },
  { seconds: 7 * 24 * 3600, label: '7 days' },
];

/** An API key's state at `now`: revoked, expired (a rolled key past its window), expiring, active. */
export function keyState(
  key: { revokeTime?: Timestamp; expireTime?: Timestamp },
  now: Date,
): { state: 'revoked' | 'expired' | 'expiring' | 'active'; at: Date | null } {
  const revoked = toDate(key.revokeTime);
  if (revoked) return { state: 'revoked', at: revoked };
  const expires = toDate(key.expireTime);
  if (expires) return { state: expires <= now ? 'expired' : 'expiring', at: expires };
  return { state: 'active', at: null };
}

/** "*" stands for every event type, alone: with it, any other choice means nothing. */
export function normalizeEvents(chosen: readonly string[]): string[] {
  return chosen.includes('*') ? ['*'] : [...chosen];
}
