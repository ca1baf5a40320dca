import { Component, OnInit, computed, effect, inject, signal, untracked } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatButtonToggleModule } from '@angular/material/button-toggle';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { ActivatedRoute, Router, RouterLink } from '@angular/router';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { ChartConfiguration } from 'chart.js';
import { BaseChartDirective } from 'ng2-charts';

import { AdminService, type CurrencyOverview, type RevenueBucket } from '@gen/paymesh/admin/v1/admin_pb';
import { formatMoney, toMajorNumber } from '@shared/money';
import { toDate } from '@shared/time';
import { TimePipe } from '@shared/format';
import { LiveOverview } from '../live';
import { Session, describeError } from '../session';

type Granularity = 'HOUR' | 'DAY';

/** How far back each granularity looks: 24 hours, or 30 days. */
const RANGE_MS: Record<Granularity, number> = { HOUR: 24 * 3_600_000, DAY: 30 * 86_400_000 };
/** Live updates can come in bursts; the timeline is refetched at most this often. */
const TIMELINE_REFRESH_MS = 1000;

interface Figure {
  id: string;
  label: string;
  value: string;
  tone?: 'good' | 'bad' | 'warn';
}

/** Figures per currency, revenue and status charts, webhook and worker health; live from the stream. */
@Component({
  selector: 'pm-overview-page',
  imports: [FormsModule, RouterLink, MatButtonModule, MatButtonToggleModule, MatFormFieldModule, MatInputModule, BaseChartDirective, TimePipe],
  templateUrl: './overview.html',
  styleUrl: './overview.scss',
})
export class OverviewPage implements OnInit {
  private readonly session = inject(Session);
  private readonly route = inject(ActivatedRoute);
  private readonly router = inject(Router);
  readonly live = inject(LiveOverview);

  /** Only this merchant's figures (the `merchant` query parameter); empty for all. */
  readonly merchantId = signal('');
  merchantInput = '';

  readonly currency = signal('');
  readonly granularity = signal<Granularity>('HOUR');
  readonly buckets = signal<RevenueBucket[]>([]);
  readonly error = signal('');

  readonly currencies = computed(() => this.live.overview()?.currencies.map((c) => c.currency) ?? []);
  readonly selected = computed<CurrencyOverview | undefined>(() =>
    this.live.overview()?.currencies.find((c) => c.currency === this.currency()),
  );
  readonly webhooks = computed(() => this.live.overview()?.webhooks);
  /** Every worker process; a dead or hung one (no heartbeat) is listed as not beating. */
  readonly workers = computed(() => this.live.overview()?.workers ?? []);
  readonly unhealthyWorkers = computed(() => this.workers().filter((w) => !w.healthy).length);
  /** What waits: queues, the payment outbox, stuck work (the alerts' thresholds mark it late). */
  readonly pipeline = computed(() => this.live.overview()?.pipeline);
  readonly queueLateS = 120;
  readonly outboxLateS = 60;
  /** Templates have no bigint literals. */
  readonly zero = 0n;
  readonly pipelineWarnings = computed(() => {
    const p = this.pipeline();
    if (!p) return [];
    return [
      ...p.queues
        .filter((q) => q.oldestJobAgeSeconds > this.queueLateS)
        .map((q) => `Queue ${q.queue}: its oldest job has waited ${this.seconds(q.oldestJobAgeSeconds)}.`),
      ...p.outbox
        .filter((o) => o.lagSeconds > this.outboxLateS)
        .map((o) => `Payment outbox: ${o.kind}s wait ${this.seconds(o.lagSeconds)} to be relayed.`),
      ...(p.stuckPayments > 0n ? [`${p.stuckPayments} payments are stuck in processing.`] : []),
      ...(p.stuckRefunds > 0n ? [`${p.stuckRefunds} refunds are stuck pending.`] : []),
    ];
  });

  /** A wait in seconds, as "0 s", "42 s" or "3 min 5 s". */
  seconds(value: number): string {
    const whole = Math.round(value);
    return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`;
  }

  readonly figures = computed<Figure[]>(() => {
    const c = this.selected();
    if (!c) return [];
    const money = (amount: bigint) => formatMoney(amount, c.currency);
    return [
      { id: 'succeeded', label: 'Succeeded', value: c.succeededCount.toString(), tone: 'good' },
      { id: 'failed', label: 'Failed', value: c.failedCount.toString(), tone: 'bad' },
      { id: 'processing', label: 'Processing', value: c.processingCount.toString(), tone: 'warn' },
      { id: 'success-rate', label: 'Success rate', value: `${(c.successRate * 100).toFixed(1)}%` },
      { id: 'gross', label: 'Gross volume', value: money(c.grossVolume) },
      { id: 'fees', label: 'Fees', value: money(c.fees) },
      { id: 'refunds', label: 'Refunds', value: money(c.refunded) },
      { id: 'net', label: 'Net volume', value: money(c.netVolume) },
    ];
  });

  readonly revenueChart = computed<ChartConfiguration<'bar'>['data']>(() => {
    const currency = this.currency();
    const hourly = this.granularity() === 'HOUR';
    const buckets = this.buckets();
    const label = (b: RevenueBucket) => {
      const date = toDate(b.startTime);
      if (!date) return '';
      return hourly
        ? date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
        : date.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
    };
    return {
      labels: buckets.map(label),
      datasets: [
        { label: 'Gross', data: buckets.map((b) => toMajorNumber(b.gross, currency)), backgroundColor: '#2f6fdb' },
        { label: 'Fees', data: buckets.map((b) => toMajorNumber(b.fees, currency)), backgroundColor: '#8fb3ef' },
        { label: 'Refunds', data: buckets.map((b) => toMajorNumber(b.refunds, currency)), backgroundColor: '#e07b39' },
      ],
    };
  });

  readonly revenueOptions = computed<ChartConfiguration<'bar'>['options']>(() => {
    const currency = this.currency();
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      plugins: {
        legend: { position: 'bottom' },
        tooltip: {
          callbacks: {
            label: (item) => `${item.dataset.label}: ${currency ? new Intl.NumberFormat(undefined, { style: 'currency', currency }).format(item.parsed.y ?? 0) : item.parsed.y}`,
          },
        },
      },
      scales: { y: { beginAtZero: true } },
    };
  });

  readonly statusChart = computed<ChartConfiguration<'doughnut'>['data']>(() => {
    const c = this.selected();
    const counts = c
      ? [c.succeededCount, c.failedCount, c.processingCount, c.requiresCaptureCount, c.requiresPaymentMethodCount, c.canceledCount].map(Number)
      : [];
    return {
      labels: ['Succeeded', 'Failed', 'Processing', 'Requires capture', 'Awaiting card', 'Canceled'],
      datasets: [{ data: counts, backgroundColor: ['#2e9d55', '#d64545', '#f0b429', '#2f6fdb', '#9aa5b8', '#5c6578'] }],
    };
  });
  readonly statusOptions: ChartConfiguration<'doughnut'>['options'] = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    plugins: { legend: { position: 'bottom' } },
  };

  private lastTimelineFetch = 0;
  private pendingFetch: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    // The first currency seen becomes the selection; a selection that vanished is replaced.
    effect(() => {
      const currencies = this.currencies();
      if (currencies.length && !currencies.includes(untracked(this.currency))) {
        this.currency.set(currencies[0]);
      }
    });
    // Refetch the timeline when the selection changes or a live update arrives.
    effect(() => {
      this.merchantId();
      this.currency();
      this.granularity();
      this.live.updates();
      untracked(() => this.scheduleTimeline());
    });
  }

  ngOnInit(): void {
    this.route.queryParamMap.subscribe((params) => {
      const merchantId = params.get('merchant') ?? '';
      this.merchantId.set(merchantId);
      this.merchantInput = merchantId;
      this.live.scope(merchantId);
      // The stream sends the overview too; this fills the page without waiting for it.
      this.session
        .api(AdminService.method.getOverview, { merchantId, livemode: false })
        .then((overview) => {
          if (!this.live.overview() && merchantId === this.merchantId()) this.live.overview.set(overview);
        })
        .catch((error: unknown) => this.error.set(describeError(error)));
    });
  }

  applyMerchant(): void {
    const merchant = this.merchantInput.trim();
    void this.router.navigate([], { queryParams: { merchant: merchant || null } });
  }

  private scheduleTimeline(): void {
    clearTimeout(this.pendingFetch);
    const wait = Math.max(0, this.lastTimelineFetch + TIMELINE_REFRESH_MS - Date.now());
    this.pendingFetch = setTimeout(() => void this.fetchTimeline(), wait);
  }

  private async fetchTimeline(): Promise<void> {
    const currency = this.currency();
    if (!currency) return;
    this.lastTimelineFetch = Date.now();
    const granularity = this.granularity();
    const end = new Date();
    const start = new Date(end.getTime() - RANGE_MS[granularity]);
    try {
      const response = await this.session.api(AdminService.method.getRevenueTimeline, {
        granularity,
        currency,
        startTime: timestampFromDate(start),
        endTime: timestampFromDate(end),
        merchantId: this.merchantId(),
        livemode: false,
      });
      if (currency === this.currency()) this.buckets.set(response.buckets);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  webhookTotal(): number {
    const w = this.webhooks();
    return w ? Number(w.delivered + w.pending + w.failing + w.dead) : 0;
  }

  share(count: bigint | undefined): string {
    const total = this.webhookTotal();
    return total && count !== undefined ? `${((Number(count) / total) * 100).toFixed(1)}%` : '0%';
  }
}
