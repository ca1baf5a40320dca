import { Component, OnDestroy, OnInit, computed, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { RouterLink } from '@angular/router';

import { PaymentService, type Dispute } from '@gen/paymesh/payment/v1/payment_pb';
import { Actions } from '@shared/actions';
import { Confirm } from '@shared/confirm';
import { MoneyPipe, TimePipe } from '@shared/format';
import { IdempotencyKeys } from '@shared/idempotency';
import { formatMoney } from '@shared/money';
import { describeError } from '@shared/rest';
import { Session } from '../session';

/** Statuses in which the network waits for the merchant's answer (evidence or acceptance). */
const AWAITING = new Set(['needs_response', 'warning_needs_response']);
/** While the network decides, the page looks again this often. */
const POLL_MS = 1500;

/**
 * One dispute: what is disputed and until when, the evidence form (saved, or submitted to the
 * card network) and "Accept dispute" (asked first); admins only, as the server allows.
 */
@Component({
  selector: 'pm-dispute-page',
  imports: [FormsModule, RouterLink, MatButtonModule, MatFormFieldModule, MatInputModule, MoneyPipe, TimePipe],
  template: `
    <p><a routerLink="/disputes">← Disputes</a></p>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    @if (dispute(); as d) {
      <h1 class="page-title"><span class="mono">{{ d.id }}</span> <span class="status-chip" [class]="d.status" data-testid="dispute-status">{{ d.status }}</span></h1>
      <section class="panel">
        <dl class="summary">
          <div><dt>Payment</dt><dd><a [routerLink]="['/payments', d.paymentId]" class="mono" data-testid="dispute-payment">{{ d.paymentId }}</a></dd></div>
          <div><dt>Amount</dt><dd data-testid="dispute-amount">{{ d.amount | money: d.currency }}</dd></div>
          <div><dt>Reason</dt><dd data-testid="dispute-reason">{{ d.reason }}</dd></div>
          <div><dt>Dispute fee</dt><dd>{{ d.fee | money: d.currency }}</dd></div>
          <div><dt>Evidence due</dt><dd data-testid="dispute-due">
            {{ d.evidenceDetails?.dueBy | time }}
            @if (d.evidenceDetails?.pastDue) { <span class="error-text"> · past due</span> }
          </dd></div>
          <div><dt>Evidence</dt><dd data-testid="dispute-evidence-state">
            {{ d.evidenceDetails?.submitted ? 'submitted' : d.evidenceDetails?.hasEvidence ? 'saved, not submitted' : 'none yet' }}
          </dd></div>
          <div><dt>Funds</dt><dd>{{ d.fundsReinstated ? 'reinstated' : d.fundsWithdrawn ? 'withdrawn' : 'not withdrawn' }}</dd></div>
          <div><dt>Created</dt><dd>{{ d.createTime | time }}</dd></div>
        </dl>
      </section>

      <section class="panel" aria-labelledby="evidence-title">
        <h2 id="evidence-title">Evidence</h2>
        @if (canRespond()) {
          <form class="evidence" (ngSubmit)="save(false)">
            <mat-form-field appearance="outline">
              <mat-label>Customer name</mat-label>
              <input matInput name="customerName" [(ngModel)]="customerName" (ngModelChange)="edited()" data-testid="evidence-customer-name">
            </mat-form-field>
            <mat-form-field appearance="outline">
              <mat-label>Customer email address</mat-label>
              <input matInput type="email" name="customerEmailAddress" [(ngModel)]="customerEmailAddress" (ngModelChange)="edited()" data-testid="evidence-customer-email">
            </mat-form-field>
            <mat-form-field appearance="outline" class="wide">
              <mat-label>Product description</mat-label>
              <textarea matInput rows="2" name="productDescription" [(ngModel)]="productDescription" (ngModelChange)="edited()" data-testid="evidence-product"></textarea>
            </mat-form-field>
            <mat-form-field appearance="outline" class="wide">
              <mat-label>Other evidence</mat-label>
              <textarea matInput rows="4" name="uncategorizedText" [(ngModel)]="uncategorizedText" (ngModelChange)="edited()" data-testid="evidence-text"></textarea>
            </mat-form-field>
            <div class="toolbar-row wide">
              <button mat-stroked-button type="submit" [disabled]="actions.busy()" data-testid="save-evidence">Save</button>
              <button mat-flat-button type="button" (click)="save(true)" [disabled]="actions.busy()" data-testid="submit-evidence">Submit evidence</button>
              <span class="spacer"></span>
              <button mat-button type="button" (click)="accept()" [disabled]="actions.busy()" data-testid="accept-dispute">Accept dispute</button>
            </div>
          </form>
        } @else {
          <dl class="summary" data-testid="evidence-given">
            <div><dt>Customer name</dt><dd>{{ d.evidence?.customerName || '—' }}</dd></div>
            <div><dt>Customer email address</dt><dd>{{ d.evidence?.customerEmailAddress || '—' }}</dd></div>
            <div><dt>Product description</dt><dd>{{ d.evidence?.productDescription || '—' }}</dd></div>
            <div><dt>Other evidence</dt><dd data-testid="evidence-text-given">{{ d.evidence?.uncategorizedText || '—' }}</dd></div>
          </dl>
        }
        @if (actions.error()) { <p class="error-text" role="alert" data-testid="dispute-error">{{ actions.error() }}</p> }
        @if (actions.notice()) { <p role="status" data-testid="dispute-notice">{{ actions.notice() }}</p> }
      </section>
    }
  `,
  styles: `
    .summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 0.75rem 1.5rem; margin: 0; }
    .summary dt { font-size: 0.8rem; color: #545b69; } .summary dd { margin: 0; overflow-wrap: anywhere; }
    .evidence { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 0 1rem; }
    .evidence .wide { grid-column: 1 / -1; }
  `,
})
export class DisputePage implements OnInit, OnDestroy {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly dispute = signal<Dispute | null>(null);
  readonly error = signal('');
  readonly actions = new Actions();
  private readonly keys = new IdempotencyKeys();
  /** Admins answer while the network waits and the due date has not passed. */
  readonly canRespond = computed(() => {
    const d = this.dispute();
    return !!d && this.session.isAdmin() && AWAITING.has(d.status) && !d.evidenceDetails?.pastDue;
  });

  customerName = '';
  customerEmailAddress = '';
  productDescription = '';
  uncategorizedText = '';
  private pollTimer: ReturnType<typeof setTimeout> | undefined;

  ngOnInit(): void {
    void this.load(true);
  }

  ngOnDestroy(): void {
    clearTimeout(this.pollTimer);
  }

  /** Reads the dispute; `fill` copies its evidence into the form. */
  async load(fill = false): Promise<void> {
    clearTimeout(this.pollTimer);
    try {
      const dispute = await this.session.api(PaymentService.method.getDispute, { id: this.id() });
      this.dispute.set(dispute);
      this.error.set('');
      if (fill) {
        this.customerName = dispute.evidence?.customerName ?? '';
        this.customerEmailAddress = dispute.evidence?.customerEmailAddress ?? '';
        this.productDescription = dispute.evidence?.productDescription ?? '';
        this.uncategorizedText = dispute.evidence?.uncategorizedText ?? '';
      }
      // Under review the card network decides within moments (seconds in test mode): follow it.
      if (dispute.status.endsWith('under_review')) {
        this.pollTimer = setTimeout(() => void this.load(), POLL_MS);
      }
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  /** A changed form is a new write: its next Save or Submit gets a new Idempotency-Key. */
  edited(): void {
    this.keys.done('save');
    this.keys.done('submit');
  }

  /** Saves the evidence, or submits it to the network (`submit`). */
  save(submit: boolean): Promise<void> {
    return this.actions.run(async () => {
      const action = submit ? 'submit' : 'save';
      const updated = await this.session.api(
        PaymentService.method.updateDispute,
        {
          id: this.id(),
          evidence: {
            customerName: this.customerName.trim(),
            customerEmailAddress: this.customerEmailAddress.trim(),
            productDescription: this.productDescription.trim(),
            uncategorizedText: this.uncategorizedText.trim(),
          },
          submit,
        },
        { idempotencyKey: this.keys.get(action) },
      );
      this.keys.done(action);
      this.actions.notice.set(submit ? 'Evidence submitted to the card network.' : 'Evidence saved.');
      this.dispute.set(updated);
      await this.load();
    });
  }

  /** Accepts the dispute (closes it) once the user confirmed. */
  async accept(): Promise<void> {
    const d = this.dispute();
    if (!d) return;
    const chargeback = !d.status.startsWith('warning_');
    const confirmed = await this.confirm.ask({
      title: 'Accept this dispute?',
      message: chargeback
        ? `Accepting gives up ${formatMoney(d.amount, d.currency)} of ${d.paymentId} and the ${formatMoney(d.fee, d.currency)} dispute fee: the dispute is lost. This cannot be undone.`
        : `Accepting closes the inquiry about ${d.paymentId} without evidence. This cannot be undone.`,
      action: 'Accept dispute',
    });
    if (!confirmed) return;
    await this.actions.run(async () => {
      const closed = await this.session.api(PaymentService.method.closeDispute, { id: d.id }, { idempotencyKey: this.keys.get('close') });
      this.keys.done('close');
      this.dispute.set(closed);
      this.actions.notice.set(`The dispute is ${closed.status}.`);
    });
  }
}
