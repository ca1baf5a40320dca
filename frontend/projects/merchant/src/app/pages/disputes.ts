import { Component, OnInit, inject, signal } from '@angular/core';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';

import { PaymentService, type Dispute } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { describeError } from '@shared/rest';
import { Session } from '../session';

const PAGE_SIZE = 25;

/** The merchant's disputes, newest first, page by page; each opens its evidence form. */
@Component({
  selector: 'pm-disputes-page',
  imports: [RouterLink, MatTableModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Disputes</h1>
    @if (error()) { <p class="error-text" role="alert" data-testid="disputes-error">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Disputes">
      <table mat-table [dataSource]="disputes()" data-testid="disputes-table">
        <ng-container matColumnDef="id">
          <th mat-header-cell *matHeaderCellDef>Dispute</th>
          <td mat-cell *matCellDef="let d"><a [routerLink]="['/disputes', d.id]" class="mono">{{ d.id }}</a></td>
        </ng-container>
        <ng-container matColumnDef="payment">
          <th mat-header-cell *matHeaderCellDef>Payment</th>
          <td mat-cell *matCellDef="let d"><a [routerLink]="['/payments', d.paymentId]" class="mono">{{ d.paymentId }}</a></td>
        </ng-container>
        <ng-container matColumnDef="amount">
          <th mat-header-cell *matHeaderCellDef class="num">Amount</th>
          <td mat-cell *matCellDef="let d" class="num" data-testid="dispute-amount">{{ d.amount | money: d.currency }}</td>
        </ng-container>
        <ng-container matColumnDef="reason">
          <th mat-header-cell *matHeaderCellDef>Reason</th>
          <td mat-cell *matCellDef="let d" data-testid="dispute-reason">{{ d.reason }}</td>
        </ng-container>
        <ng-container matColumnDef="status">
          <th mat-header-cell *matHeaderCellDef>Status</th>
          <td mat-cell *matCellDef="let d"><span class="status-chip" [class]="d.status" data-testid="dispute-status">{{ d.status }}</span></td>
        </ng-container>
        <ng-container matColumnDef="due">
          <th mat-header-cell *matHeaderCellDef>Evidence due</th>
          <td mat-cell *matCellDef="let d" class="when" data-testid="dispute-due">
            {{ d.evidenceDetails?.dueBy | time }}
            @if (d.evidenceDetails?.pastDue) { <span class="error-text"> · past due</span> }
          </td>
        </ng-container>
        <ng-container matColumnDef="created">
          <th mat-header-cell *matHeaderCellDef>Created</th>
          <td mat-cell *matCellDef="let d" class="when">{{ d.createTime | time }}</td>
        </ng-container>
        <tr mat-header-row *matHeaderRowDef="columns"></tr>
        <tr mat-row *matRowDef="let row; columns: columns" [attr.data-testid]="'dispute-row-' + row.id"></tr>
      </table>
      @if (!loading() && !error() && disputes().length === 0) { <p class="empty" data-testid="disputes-empty">No disputes.</p> }
      <pm-pager [pager]="pager" (moved)="load()" />
    </div>
  `,
})
export class DisputesPage implements OnInit {
  private readonly session = inject(Session);
  readonly columns = ['id', 'payment', 'amount', 'reason', 'status', 'due', 'created'];
  readonly disputes = signal<Dispute[]>([]);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    this.loading.set(true);
    this.error.set('');
    try {
      const response = await this.session.api(PaymentService.method.listDisputes, {
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
      });
      this.disputes.set(response.disputes);
      this.pager.nextToken.set(response.nextPageToken);
    } catch (error) {
      this.disputes.set([]);
      this.pager.nextToken.set('');
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }
}
